//! The thin I/O layer: which files of a workspace to index, and reading them. It honours
//! `.gitignore`, `.ignore` and `.nibignore`, skips `target/`, `node_modules/` and `.git/`, binary
//! and oversized files, never follows links, and never reads secret-bearing files.

use crate::index::{FileEntry, Index};
use crate::lang::Lang;
use crate::symbols::SymbolParser;
use rayon::prelude::*;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

pub const DEFAULT_MAX_BYTES: u64 = 1 << 20;

/// Files that hold secrets by convention: never indexed, never put in a prompt.
pub fn is_secret(path: &Path) -> bool {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    name.starts_with(".env")
        || name.starts_with("id_rsa")
        || name.starts_with("id_ed25519")
        || name.starts_with("id_ecdsa")
        || matches!(
            ext.as_str(),
            "pem" | "key" | "p12" | "pfx" | "jks" | "keystore"
        )
        || matches!(
            name.as_str(),
            "credentials"
                | "credentials.json"
                | ".netrc"
                | ".npmrc"
                | ".pypirc"
                | ".git-credentials"
                | "secrets.json"
                | "secrets.yaml"
                | "secrets.yml"
        )
}

/// Why a file was left out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Skip {
    Binary,
    InvalidUtf8,
    TooLarge(u64),
    Unreadable(String),
    Secret,
}

impl std::fmt::Display for Skip {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Skip::Binary => write!(f, "binary"),
            Skip::InvalidUtf8 => write!(f, "not UTF-8"),
            Skip::TooLarge(n) => write!(f, "{n} bytes, over the size limit"),
            Skip::Unreadable(e) => write!(f, "unreadable: {e}"),
            Skip::Secret => write!(f, "may hold secrets"),
        }
    }
}

/// Reads a source file, or says why it is not one nib reads.
pub fn read_source(path: &Path, max_bytes: u64) -> Result<String, Skip> {
    if is_secret(path) {
        return Err(Skip::Secret);
    }
    let meta = std::fs::metadata(path).map_err(|e| Skip::Unreadable(e.to_string()))?;
    if meta.len() > max_bytes {
        return Err(Skip::TooLarge(meta.len()));
    }
    let bytes = std::fs::read(path).map_err(|e| Skip::Unreadable(e.to_string()))?;
    if bytes.iter().take(8192).any(|&b| b == 0) {
        return Err(Skip::Binary);
    }
    String::from_utf8(bytes).map_err(|_| Skip::InvalidUtf8)
}

/// The source files under `root` in a language nib parses, as (absolute, relative) paths.
pub fn source_files(root: &Path) -> Vec<(PathBuf, String)> {
    let mut out = Vec::new();
    let walker = ignore::WalkBuilder::new(root)
        .follow_links(false)
        .hidden(false)
        .require_git(false)
        .add_custom_ignore_filename(".nibignore")
        .filter_entry(|e| {
            let name = e.file_name().to_string_lossy();
            !(e.file_type().is_some_and(|t| t.is_dir())
                && matches!(
                    name.as_ref(),
                    "target" | "node_modules" | ".git" | ".hg" | ".jj"
                ))
        })
        .build();
    for entry in walker.flatten() {
        if !entry.file_type().is_some_and(|t| t.is_file()) {
            continue;
        }
        let path = entry.path();
        if is_secret(path) {
            continue;
        }
        let ext_known = Lang::detect(path, "").is_some();
        let no_ext = path.extension().is_none();
        if !ext_known && !no_ext {
            continue;
        }
        let rel = path
            .strip_prefix(root)
            .unwrap_or(path)
            .to_string_lossy()
            .into_owned();
        out.push((path.to_path_buf(), rel));
    }
    out.sort_by(|a, b| a.1.cmp(&b.1));
    out
}

/// What indexing a workspace did.
#[derive(Debug, Clone, Default)]
pub struct BuildReport {
    pub seconds: f64,
    pub skipped: Vec<(String, String)>,
}

/// Indexes every source file under `root`, in parallel. `progress` is called with each file's
/// size as it is done.
pub fn build(root: &Path, max_bytes: u64, progress: &(dyn Fn(u64) + Sync)) -> (Index, BuildReport) {
    let t0 = Instant::now();
    let files = source_files(root);
    let (mut index, mut report) = build_files(&files, max_bytes, progress);
    index.crates = rust_crates(root, &files);
    report.seconds = t0.elapsed().as_secs_f64();
    (index, report)
}

/// The Rust crates of the workspace: for each directory that holds a `src/` with source files
/// and a `Cargo.toml` naming a package, name (with `_` for `-`) → `dir/src/`.
pub fn rust_crates(root: &Path, files: &[(PathBuf, String)]) -> BTreeMap<String, String> {
    let mut dirs: Vec<&str> = files
        .iter()
        .filter(|(_, rel)| rel.ends_with(".rs"))
        .filter_map(|(_, rel)| {
            let i = rel.find("src/")?;
            (i == 0 || rel[..i].ends_with('/')).then(|| &rel[..i])
        })
        .collect();
    dirs.sort_unstable();
    dirs.dedup();
    let mut out = BTreeMap::new();
    for dir in dirs {
        let Ok(toml) = std::fs::read_to_string(root.join(dir).join("Cargo.toml")) else {
            continue;
        };
        if let Some(name) = package_name(&toml) {
            out.insert(name.replace('-', "_"), format!("{dir}src/"));
        }
    }
    out
}

/// `name` in a Cargo.toml's `[package]` table.
fn package_name(toml: &str) -> Option<String> {
    let mut in_package = false;
    for line in toml.lines().map(str::trim) {
        if line.starts_with('[') {
            in_package = line == "[package]";
        } else if in_package {
            if let Some(v) = line.strip_prefix("name") {
                let v = v.trim_start().strip_prefix('=')?.trim();
                return Some(v.trim_matches(['"', '\'']).to_string());
            }
        }
    }
    None
}

/// [`build`] over files already listed by [`source_files`] (a caller that shows progress knows
/// the total first). `progress` is called once per file with the bytes it read.
pub fn build_files(
    files: &[(PathBuf, String)],
    max_bytes: u64,
    progress: &(dyn Fn(u64) + Sync),
) -> (Index, BuildReport) {
    let t0 = Instant::now();
    let results: Vec<(String, Result<FileEntry, Skip>)> = files
        .par_iter()
        .map_init(SymbolParser::new, |parser, (abs, rel)| {
            let r = read_source(abs, max_bytes).and_then(|text| {
                let lang = Lang::detect(abs, &text).ok_or(Skip::Binary)?;
                Ok(FileEntry {
                    lang,
                    bytes: text.len(),
                    symbols: parser.parse(lang, &text),
                })
            });
            progress(r.as_ref().map_or(0, |e| e.bytes as u64));
            (rel.clone(), r)
        })
        .collect();
    let mut index = Index::new();
    let mut report = BuildReport::default();
    for (rel, r) in results {
        match r {
            Ok(entry) => index.insert(&rel, entry),
            // A file without a known language and without a shebang is simply not source.
            Err(Skip::Binary) if Lang::detect(Path::new(&rel), "").is_none() => {}
            Err(why) => report.skipped.push((rel, why.to_string())),
        }
    }
    report.seconds = t0.elapsed().as_secs_f64();
    (index, report)
}
