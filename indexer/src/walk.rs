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

/// Directories the walk never enters.
const SKIPPED_DIRS: [&str; 5] = ["target", "node_modules", ".git", ".hg", ".jj"];

/// Why a file must stay out of every prompt (and the index), whoever offers it: the walk, an open
/// editor buffer, a file the editor reports as changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exclusion {
    /// Its name says it may hold secrets ([`is_secret`]).
    Secret,
    /// A `.gitignore`, `.ignore`, `.nibignore` or `.git/info/exclude` pattern covers it.
    Ignored,
    /// It lies under a directory the walk never enters (`target/`, `node_modules/`, `.git/`, …).
    SkippedDir(String),
}

impl std::fmt::Display for Exclusion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Exclusion::Secret => write!(f, "may hold secrets"),
            Exclusion::Ignored => write!(f, "is ignored (.gitignore, .ignore or .nibignore)"),
            Exclusion::SkippedDir(d) => write!(f, "is under {d}/, which nib never reads"),
        }
    }
}

/// Whether `path` (absolute, or relative to `root`) must never reach a prompt: its name marks it
/// as secret, or, inside `root`, an ignore file covers it or it lies under a skipped directory.
/// The same rules as [`source_files`], asked of one file: the ignore files from the root's
/// parents down to the file's directory are read now (deeper ones override shallower; `.nibignore` over `.ignore` over
/// `.gitignore`, as in the walk), so the answer follows the disk.
pub fn exclusion(root: Option<&Path>, path: &Path) -> Option<Exclusion> {
    if is_secret(path) {
        return Some(Exclusion::Secret);
    }
    let root = root?;
    let abs = if path.is_absolute() {
        path.to_path_buf()
    } else {
        root.join(path)
    };
    let rel = abs.strip_prefix(root).ok()?;
    let mut dirs = Vec::new();
    let mut dir = root.to_path_buf();
    let parts: Vec<_> = rel.components().collect();
    for (i, part) in parts.iter().enumerate() {
        let name = part.as_os_str().to_string_lossy();
        if i + 1 < parts.len() && SKIPPED_DIRS.contains(&name.as_ref()) {
            return Some(Exclusion::SkippedDir(name.into_owned()));
        }
        if i + 1 < parts.len() {
            dirs.push(dir.clone());
            dir.push(part);
        }
    }
    dirs.push(dir);
    // The walk reads the ignore files of the root's parents too (the `ignore` crate's default).
    let parents: Vec<PathBuf> = root.ancestors().skip(1).map(Path::to_path_buf).collect();
    dirs.splice(0..0, parents.into_iter().rev());
    // Deepest directory first: the first file with a verdict decides.
    for dir in dirs.iter().rev() {
        let mut files = vec![
            dir.join(".nibignore"),
            dir.join(".ignore"),
            dir.join(".gitignore"),
        ];
        if dir == root {
            files.push(root.join(".git/info/exclude"));
        }
        for file in files {
            if !file.is_file() {
                continue;
            }
            let mut b = ignore::gitignore::GitignoreBuilder::new(dir);
            if b.add(&file).is_some() {
                continue;
            }
            let Ok(m) = b.build() else { continue };
            match m.matched_path_or_any_parents(&abs, false) {
                ignore::Match::Ignore(_) => return Some(Exclusion::Ignored),
                ignore::Match::Whitelist(_) => return None,
                ignore::Match::None => {}
            }
        }
    }
    None
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
            !(e.file_type().is_some_and(|t| t.is_dir()) && SKIPPED_DIRS.contains(&name.as_ref()))
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

/// The bytes that indexing `files` reads (each file up to `max_bytes`), for a progress bar's
/// total; the files are looked at in parallel.
pub fn total_bytes(files: &[(PathBuf, String)], max_bytes: u64) -> u64 {
    files
        .par_iter()
        .filter_map(|(p, _)| std::fs::metadata(p).ok())
        .map(|m| m.len().min(max_bytes))
        .sum()
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

/// Puts into `index` the entries of the cache at `path` whose files (in `files`, with their
/// `stats`) have not changed, marking them `done`, while the cache is read on another thread.
/// Returns how many cached entries matched no file.
fn from_cache(
    path: &Path,
    root: &Path,
    files: &[(PathBuf, String)],
    stats: &[Option<(u64, u128)>],
    index: &mut Index,
    done: &mut [bool],
    progress: &(dyn Fn(u64) + Sync),
) -> Result<usize, String> {
    let at: std::collections::HashMap<&str, usize> = (files.iter().enumerate())
        .map(|(i, (_, rel))| (rel.as_str(), i))
        .collect();
    let mut stale = 0;
    std::thread::scope(|s| {
        let (tx, rx) = std::sync::mpsc::sync_channel::<(String, cache::Cached)>(256);
        let reader =
            s.spawn(move || cache::load_each(path, root, |rel, c| tx.send((rel, c)).is_ok()));
        for (rel, c) in rx {
            match at.get(rel.as_str()) {
                Some(&i) if !done[i] && stats[i] == Some((c.size, c.mtime_ns)) => {
                    progress(c.entry.bytes as u64);
                    index.insert(&rel, c.entry);
                    done[i] = true;
                }
                _ => stale += 1,
            }
        }
        reader
            .join()
            .unwrap_or_else(|_| Err("its reader failed".into()))
    })?;
    Ok(stale)
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
    // (size, modification time) of each file: the cache's key; the size also orders the work.
    let stats: Vec<Option<(u64, u128)>> = files
        .par_iter()
        .map(|(abs, _)| cache::key_of(abs))
        .collect();
    let mut index = Index::new();
    // The files indexed so far, by position in `files`.
    let mut done = vec![false; files.len()];
    // Cached entries that no file matches any more (deleted or changed since).
    let mut stale = 0;
    if let Some(path) = cache {
        match from_cache(path, root, files, &stats, &mut index, &mut done, progress) {
            Ok(n) => stale = n,
            Err(why) => {
                report.cache_note = Some(format!(
                    "index cache {}: {why}; indexing from scratch",
                    path.display()
                ));
                index = Index::new();
                done.fill(false);
            }
        }
    }
    let cache_was_valid = cache.is_some() && report.cache_note.is_none();
    report.from_cache = done.iter().filter(|d| **d).count();
    // The rest is parsed in batches, each in parallel and then put in the index (which shares
    // one copy of each name: the names of a batch, not of the whole repository, exist twice at a
    // time) while the next batch is parsed. Largest files first: a syntax tree takes some 35
    // bytes per byte of source while it lives, and the largest trees had better come while the
    // index is still small.
    const BATCH: usize = 512;
    let mut order: Vec<usize> = (0..files.len()).filter(|&i| !done[i]).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(stats[i].map_or(0, |(size, _)| size)));
    let parse = |batch: &[usize]| -> Vec<(usize, Result<FileEntry, Skip>)> {
        batch
            .par_iter()
            .map(|&i| {
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
                (i, r)
            })
            .collect()
    };
    let mut parsed = 0;
    let mut insert = |results: Vec<(usize, Result<FileEntry, Skip>)>| {
        for (i, r) in results {
            let rel = &files[i].1;
            match r {
                Ok(entry) => {
                    parsed += 1;
                    done[i] = true;
                    index.insert(rel, entry);
                }
                // A file without a known language and without a shebang is simply not source.
                Err(Skip::Binary) if Lang::detect(Path::new(rel), "").is_none() => {}
                Err(why) => report.skipped.push((rel.clone(), why.to_string())),
            }
        }
    };
    let mut pending = Vec::new();
    for batch in order.chunks(BATCH) {
        let (results, ()) = rayon::join(|| parse(batch), || insert(std::mem::take(&mut pending)));
        pending = results;
    }
    insert(pending);
    report.skipped.sort();
    index.crates = rust_crates(root, files);
    // Write back when something was parsed or dropped, or the old cache was unusable: a warm
    // start with nothing changed writes nothing.
    let changed = parsed > 0 || stale > 0 || !cache_was_valid;
    if let (Some(path), true) = (cache, changed) {
        let keep: Vec<(String, u64, u128)> = (files.iter().zip(&stats).zip(&done))
            .filter_map(|(((_, rel), key), done)| {
                let (size, mtime) = (*key).filter(|_| *done)?;
                Some((rel.clone(), size, mtime))
            })
            .collect();
        if let Err(e) = cache::save(path, root, &index, &keep) {
            report.cache_note = Some(format!("index cache {}: not written: {e}", path.display()));
        }
    }
    report.seconds = t0.elapsed().as_secs_f64();
    (index, report)
}
