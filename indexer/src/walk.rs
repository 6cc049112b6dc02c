//! The thin I/O layer: which files of a workspace to index, and reading them. It honours
//! `.gitignore`, `.ignore` and `.nibignore`, skips `target/`, `node_modules/` and `.git/`, binary
//! and oversized files, never follows links, and never reads secret-bearing files.

use crate::cache;
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
    /// Files whose entries came from the on-disk cache.
    pub from_cache: usize,
    /// Why the cache was not used or not written, for a log line.
    pub cache_note: Option<String>,
}

/// Indexes every source file under `root`, in parallel. `progress` is called with each file's
/// size as it is done.
pub fn build(root: &Path, max_bytes: u64, progress: &(dyn Fn(u64) + Sync)) -> (Index, BuildReport) {
    let t0 = Instant::now();
    let files = source_files(root);
    let (index, mut report) = build_files(root, &files, max_bytes, None, progress);
    report.seconds = t0.elapsed().as_secs_f64();
    (index, report)
}

/// [`build_files`] with the default size limit and the workspace's cache in the user's cache
/// directory ([`crate::cache::default_path`]): what the server and the CLI use.
pub fn build_cached(
    root: &Path,
    files: &[(PathBuf, String)],
    progress: &(dyn Fn(u64) + Sync),
) -> (Index, BuildReport) {
    let cache = cache::default_path(root);
    build_files(root, files, DEFAULT_MAX_BYTES, cache.as_deref(), progress)
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

thread_local! {
    /// One parser per worker thread, for the thread's life: compiling a grammar's tags query
    /// takes milliseconds, and rayon's `map_init` would do it once per split of the work.
    static PARSER: std::cell::RefCell<SymbolParser> = std::cell::RefCell::new(SymbolParser::new());
}

/// [`build`] over files already listed by [`source_files`] (a caller that shows progress knows
/// the total first), reusing the entries of the on-disk cache at `cache` (see [`crate::cache`])
/// whose size and modification time still match, and writing the cache back when anything
/// changed. `progress` is called once per file with its size.
pub fn build_files(
    root: &Path,
    files: &[(PathBuf, String)],
    max_bytes: u64,
    cache: Option<&Path>,
    progress: &(dyn Fn(u64) + Sync),
) -> (Index, BuildReport) {
    let t0 = Instant::now();
    let mut report = BuildReport::default();
    let mut old = match cache.map(|p| (p, cache::load(p, root))) {
        Some((_, Ok(entries))) => entries,
        Some((p, Err(why))) => {
            report.cache_note = Some(format!(
                "index cache {}: {why}; indexing from scratch",
                p.display()
            ));
            Default::default()
        }
        None => Default::default(),
    };
    let cache_was_valid = cache.is_some() && report.cache_note.is_none();
    // (size, modification time) of each file; the size also orders the work below.
    let stats: Vec<Option<(u64, u128)>> = files
        .par_iter()
        .map(|(abs, _)| cache::key_of(abs))
        .collect();
    let keys: Vec<Option<(u64, u128)>> = stats
        .iter()
        .map(|k| k.filter(|_| cache.is_some()))
        .collect();
    // Hits move out of the loaded cache; the rest is parsed, in parallel.
    let mut hits: Vec<Option<FileEntry>> = files
        .iter()
        .zip(&keys)
        .map(|((_, rel), key)| {
            let c = old.get(rel)?;
            (Some((c.size, c.mtime_ns)) == *key).then(|| old.remove(rel).map(|c| c.entry))?
        })
        .collect();
    report.from_cache = hits.iter().filter(|h| h.is_some()).count();
    // Files parsed now whose entries the cache lacks (a file that fails again, binary or
    // unreadable, changes nothing: it is not cached either way).
    let mut parsed = 0;
    let mut index = Index::new();
    let mut keep: Vec<(String, u64, u128)> = Vec::new();
    // In batches, each parsed in parallel and then put in the index, which shares one copy of
    // each name: the names of a batch, not of the whole repository, exist twice at a time.
    // Largest files first: a syntax tree takes some 35 bytes per byte of source while it lives,
    // and the largest trees had better come while the index is still small.
    const BATCH: usize = 512;
    let mut order: Vec<usize> = (0..files.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(stats[i].map_or(0, |(size, _)| size)));
    for batch in order.chunks(BATCH) {
        let work: Vec<(usize, Option<FileEntry>)> =
            batch.iter().map(|&i| (i, hits[i].take())).collect();
        let results: Vec<(usize, bool, Result<FileEntry, Skip>)> = work
            .into_par_iter()
            .map(|(i, hit)| {
                if let Some(entry) = hit {
                    progress(entry.bytes as u64);
                    return (i, true, Ok(entry));
                }
                let abs = &files[i].0;
                let r = read_source(abs, max_bytes).and_then(|text| {
                    let lang = Lang::detect(abs, &text).ok_or(Skip::Binary)?;
                    Ok(FileEntry {
                        lang,
                        bytes: text.len(),
                        symbols: PARSER.with_borrow_mut(|parser| parser.parse(lang, &text)),
                    })
                });
                progress(r.as_ref().map_or(0, |e| e.bytes as u64));
                (i, false, r)
            })
            .collect();
        for (i, hit, r) in results {
            let rel = &files[i].1;
            match r {
                Ok(entry) => {
                    parsed += usize::from(!hit);
                    index.insert(rel, entry);
                    if let Some((size, mtime)) = keys[i] {
                        keep.push((rel.clone(), size, mtime));
                    }
                }
                // A file without a known language and without a shebang is simply not source.
                Err(Skip::Binary) if Lang::detect(Path::new(rel), "").is_none() => {}
                Err(why) => report.skipped.push((rel.clone(), why.to_string())),
            }
        }
    }
    report.skipped.sort();
    index.crates = rust_crates(root, files);
    // Write back when something was parsed or dropped, or the old cache was unusable: a warm
    // start with nothing changed writes nothing.
    let changed = parsed > 0 || !old.is_empty() || !cache_was_valid;
    if let (Some(path), true) = (cache, changed) {
        if let Err(e) = cache::save(path, root, &index, &keep) {
            report.cache_note = Some(format!("index cache {}: not written: {e}", path.display()));
        }
    }
    report.seconds = t0.elapsed().as_secs_f64();
    (index, report)
}
