//! HumanEval-X Rust, single-line infilling, executed with cargo.
//!
//! Tasks are built from `canonical_solution` the way [`humaneval`](crate::humaneval) builds
//! Python's (the text before the hole is `declaration` plus the solution's earlier lines). Programs
//! are checked in one prepared crate whose dependencies (`rand`, `regex`, `md5`) build once: a
//! batch of programs becomes one module each of a single library, compiled together; modules
//! that do not compile are found from the compiler's JSON diagnostics and dropped, and the rest
//! compiled again, so a batch costs one or a few builds instead of one per task. Each module's
//! tests then run, alone, from the test binary in the [`sandbox`](crate::sandbox).

use crate::humaneval::{cut, Kind, Task};
use crate::sandbox::{Limits, Sandbox, Verdict};
use anyhow::Context as _;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

#[derive(Debug, Clone, serde::Deserialize)]
pub struct Problem {
    pub task_id: String,
    pub declaration: String,
    pub canonical_solution: String,
    pub test: String,
}

/// Every single-line task, in file order: the declaration, the solution with a hole, the tests.
pub fn tasks(problems: &[Problem]) -> Vec<Task> {
    problems
        .iter()
        .flat_map(|p| {
            cut(
                &p.task_id,
                &p.declaration,
                &p.canonical_solution,
                &p.test,
                Kind::Single,
            )
        })
        .collect()
}

/// The prepared crate.
pub struct Crate {
    pub dir: PathBuf,
}

const MANIFEST: &str = r#"[package]
name = "humaneval_rust"
version = "0.0.0"
edition = "2021"

[dependencies]
rand = "0.8"
regex = "1"
md5 = "0.7"

[profile.dev]
debug = false
incremental = false
"#;

impl Crate {
    /// Makes (or reuses) the crate in `dir` and builds its dependencies.
    pub fn prepare(dir: &Path) -> anyhow::Result<Crate> {
        std::fs::create_dir_all(dir.join("src"))?;
        let manifest = dir.join("Cargo.toml");
        if std::fs::read_to_string(&manifest).ok().as_deref() != Some(MANIFEST) {
            std::fs::write(&manifest, MANIFEST)?;
        }
        let c = Crate {
            dir: dir.to_path_buf(),
        };
        std::fs::write(dir.join("src/lib.rs"), "")?;
        let out = c.cargo(&["test", "--no-run", "--quiet"])?;
        if !out.status.success() {
            anyhow::bail!(
                "cannot build the HumanEval-X Rust crate's dependencies in {} (crates.io needed once):\n{}",
                dir.display(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(c)
    }

    fn cargo(&self, args: &[&str]) -> anyhow::Result<std::process::Output> {
        Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
            .args(args)
            .current_dir(&self.dir)
            .env("CARGO_TARGET_DIR", self.dir.join("target"))
            .env_remove("RUSTFLAGS")
            .env_remove("CARGO_BUILD_RUSTFLAGS")
            .env_remove("CARGO_ENCODED_RUSTFLAGS")
            .output()
            .with_context(|| "cannot run cargo")
    }

    /// Checks each program of the batch: its verdict and the end of its output (the compiler's
    /// first error when it did not compile). Results in input order.
    pub fn check(&self, sandbox: &Sandbox, programs: &[String]) -> Vec<(Verdict, String)> {
        let mut results: Vec<Option<(Verdict, String)>> = vec![None; programs.len()];
        let mut live: BTreeSet<usize> = (0..programs.len()).collect();
        let src = self.dir.join("src");
        // Old modules go: the library is exactly this batch.
        if let Ok(entries) = std::fs::read_dir(&src) {
            for e in entries.flatten() {
                if e.file_name().to_string_lossy().starts_with('t') {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        for (k, p) in programs.iter().enumerate() {
            if let Err(e) = std::fs::write(src.join(format!("t{k}.rs")), p) {
                results[k] = Some((Verdict::NotRun(e.to_string()), String::new()));
                live.remove(&k);
            }
        }
        let mut binary = None;
        // Each round drops at least one module (or falls back to one at a time), so this ends;
        // rustc reports one phase's errors a round (parsing, names, types, borrows).
        while !live.is_empty() {
            let lib: String = std::iter::once("#![allow(warnings)]\n".to_string())
                .chain(
                    live.iter()
                        .map(|k| format!("#[path = \"t{k}.rs\"] mod t{k};\n")),
                )
                .collect();
            if std::fs::write(src.join("lib.rs"), lib).is_err() {
                break;
            }
            let out = match self.cargo(&["test", "--no-run", "--message-format=json"]) {
                Ok(o) => o,
                Err(e) => {
                    for k in std::mem::take(&mut live) {
                        results[k] = Some((Verdict::NotRun(e.to_string()), String::new()));
                    }
                    break;
                }
            };
            let (errors, exe) = read_build(&String::from_utf8_lossy(&out.stdout));
            if out.status.success() {
                binary = exe;
                break;
            }
            let mut blamed = false;
            for (k, msg) in errors {
                if live.remove(&k) {
                    results[k] = Some((Verdict::Failed(101), format!("compile error: {msg}")));
                    blamed = true;
                }
            }
            if !blamed {
                // A failure no module is blamed for: check them one at a time.
                let alone: Vec<usize> = live.iter().copied().collect();
                if alone.len() == 1 {
                    results[alone[0]] = Some((
                        Verdict::Failed(101),
                        format!(
                            "build failed: {}",
                            tail_str(&String::from_utf8_lossy(&out.stderr))
                        ),
                    ));
                    live.clear();
                    break;
                }
                for k in alone {
                    let r = self.check(sandbox, &programs[k..=k]);
                    results[k] = r.into_iter().next();
                }
                return results
                    .into_iter()
                    .map(|r| r.unwrap_or((Verdict::Failed(101), String::new())))
                    .collect();
            }
        }
        if let Some(exe) = binary {
            // The sandbox's user must be able to run it: a world-readable copy.
            let shared = tempfile::Builder::new().prefix("nib-rust-bin-").tempdir();
            let copy = shared.as_ref().ok().map(|d| d.path().join("tests"));
            let ok = match (&shared, &copy) {
                (Ok(d), Some(c)) => {
                    use std::os::unix::fs::PermissionsExt;
                    std::fs::copy(&exe, c).is_ok()
                        && std::fs::set_permissions(
                            d.path(),
                            std::fs::Permissions::from_mode(0o755),
                        )
                        .is_ok()
                        && std::fs::set_permissions(c, std::fs::Permissions::from_mode(0o755))
                            .is_ok()
                }
                _ => false,
            };
            let limits = Limits {
                timeout: Duration::from_secs(10),
                ..Limits::default()
            };
            for &k in &live {
                let r = match (&copy, ok) {
                    (Some(c), true) => {
                        let filter = format!("t{k}::");
                        let r = sandbox.run(c, &[&filter, "--test-threads=1"], None, &limits);
                        // Exit 0 with the harness's summary is a pass. (Rust/32's tests are
                        // commented out in the data: any line that compiles passes it, as in
                        // the reference's count.)
                        let verdict = match r.verdict {
                            Verdict::Passed if !r.output.contains("test result: ok.") => {
                                Verdict::Failed(-2)
                            }
                            v => v,
                        };
                        (verdict, r.output)
                    }
                    _ => (
                        Verdict::NotRun("cannot copy the test binary".into()),
                        String::new(),
                    ),
                };
                results[k] = Some(r);
            }
        } else {
            for k in live {
                results[k] = Some((
                    Verdict::NotRun("the batch did not build".into()),
                    String::new(),
                ));
            }
        }
        results
            .into_iter()
            .map(|r| r.unwrap_or((Verdict::Failed(101), String::new())))
            .collect()
    }
}

/// From cargo's JSON messages: the first error of each module `tK`, and the test executable.
fn read_build(stdout: &str) -> (BTreeMap<usize, String>, Option<PathBuf>) {
    let mut errors = BTreeMap::new();
    let mut exe = None;
    for line in stdout.lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        match v["reason"].as_str() {
            Some("compiler-message") if v["message"]["level"] == "error" => {
                let msg = v["message"]["message"].as_str().unwrap_or("").to_string();
                let spans = v["message"]["spans"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default();
                for s in spans {
                    if let Some(k) = module_of(s["file_name"].as_str().unwrap_or("")) {
                        errors.entry(k).or_insert_with(|| msg.clone());
                    }
                }
            }
            Some("compiler-artifact") if v["profile"]["test"] == true => {
                if let Some(e) = v["executable"].as_str() {
                    exe = Some(PathBuf::from(e));
                }
            }
            _ => {}
        }
    }
    (errors, exe)
}

/// `src/t12.rs` → 12.
fn module_of(file: &str) -> Option<usize> {
    let name = Path::new(file).file_name()?.to_str()?;
    name.strip_prefix('t')?.strip_suffix(".rs")?.parse().ok()
}

fn tail_str(s: &str) -> String {
    let start = s.len().saturating_sub(2000);
    let start = (start..s.len())
        .find(|&i| s.is_char_boundary(i))
        .unwrap_or(s.len());
    s[start..].to_string()
}

/// The default home of the prepared crate: nib's cache directory.
pub fn default_crate_dir() -> PathBuf {
    dirs::cache_dir()
        .unwrap_or_else(std::env::temp_dir)
        .join("nib/eval/humaneval-rust")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modules_are_read_from_spans() {
        assert_eq!(module_of("src/t12.rs"), Some(12));
        assert_eq!(module_of("/x/src/t0.rs"), Some(0));
        assert_eq!(module_of("src/lib.rs"), None);
        assert_eq!(module_of("src/test.rs"), None);
    }

    #[test]
    fn brace_only_lines() {
        let t = |m: &str| Task {
            id: String::new(),
            prefix: String::new(),
            middle: m.into(),
            suffix: String::new(),
            check: String::new(),
        };
        assert!(crate::humaneval::brace_only(&t("    }\n")));
        assert!(crate::humaneval::brace_only(&t("    });\n")));
        assert!(!crate::humaneval::brace_only(&t("    return x;\n")));
    }
}
