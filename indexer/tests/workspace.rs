//! Indexing a workspace from disk, and the cross-file context it gives.

use nib_indexer::context::related_definitions;
use nib_indexer::walk::{build, DEFAULT_MAX_BYTES};
use std::path::Path;

fn write(root: &Path, rel: &str, bytes: &[u8]) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, bytes).unwrap();
}

const LIB: &str = "use std::collections::HashMap;\n\n/// Counts how often each word occurs, ignoring case.\npub fn word_histogram(text: &str) -> HashMap<String, usize> {\n    HashMap::new()\n}\n";
const MAIN: &str = "use wordstats::*;\n\nfn main() {\n    let text = read_input();\n    let counts = word_histogram(&text);\n    let top = \n}\n";

fn workspace() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let r = dir.path();
    let files: &[(&str, &[u8])] = &[
        ("src/lib.rs", LIB.as_bytes()),
        ("src/main.rs", MAIN.as_bytes()),
        (
            "src/input.rs",
            b"/// Reads stdin.\npub fn read_input() -> String { String::new() }\n",
        ),
        // Left out: ignored, generated, build output, secrets, binary, not UTF-8, too large.
        (".gitignore", b"ignored.rs\n"),
        (".nibignore", b"generated/\n"),
        ("src/ignored.rs", b"pub fn ignored_fn() {}\n"),
        ("generated/out.rs", b"pub fn generated_fn() {}\n"),
        ("target/debug/build.rs", b"pub fn target_fn() {}\n"),
        ("node_modules/x/index.js", b"function nodeModulesFn() {}\n"),
        (".env", b"API_KEY=hunter2\n"),
        ("certs/server.key", b"-----BEGIN PRIVATE KEY-----\n"),
        ("src/blob.rs", b"pub fn blob_fn() {}\0\0\0"),
        ("src/latin1.rs", b"pub fn latin1_fn() { \"caf\xe9\" }\n"),
    ];
    for (rel, bytes) in files {
        write(r, rel, bytes);
    }
    let big = format!("pub fn big_fn() {{}}\n{}", "// x\n".repeat(300_000));
    write(r, "src/big.rs", big.as_bytes());
    #[cfg(unix)]
    std::os::unix::fs::symlink(r, r.join("src/loop")).unwrap();
    dir
}

/// Headers and doc comments are read from the files when a prompt is built: a file that changed
/// on disk after it was indexed gives no garbage, only the definitions still where they were.
#[test]
fn a_file_changed_since_indexing_gives_no_stale_header() {
    let ws = workspace();
    let (index, _) = build(ws.path(), DEFAULT_MAX_BYTES, &|_| {});
    let read = |p: &str| std::fs::read_to_string(ws.path().join(p)).ok();
    let before = &MAIN[..MAIN.find("    let top").unwrap()];
    let ctx = related_definitions(&index, "src/main.rs", before, 60, 2000, &read);
    let all: String = ctx.iter().map(|(_, t)| t.as_str()).collect();
    assert!(all.contains("pub fn word_histogram(text: &str)"), "{all}");
    // lib.rs rewritten: another item where word_histogram's header was.
    write(
        ws.path(),
        "src/lib.rs",
        b"use std::collections::HashMap;\n\n/// Something else entirely, with a longer comment.\npub fn other(x: u8) {}\n",
    );
    let ctx = related_definitions(&index, "src/main.rs", before, 60, 2000, &read);
    let paths: Vec<&str> = ctx.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(paths, ["src/input.rs"], "{ctx:?}");
    assert!(
        ctx[0].1.contains("pub fn read_input() -> String"),
        "{ctx:?}"
    );
    // And a file that is gone is left out the same way.
    std::fs::remove_file(ws.path().join("src/input.rs")).unwrap();
    let ctx = related_definitions(&index, "src/main.rs", before, 60, 2000, &read);
    assert!(ctx.is_empty(), "{ctx:?}");
}

#[test]
fn walk_honours_ignores_secrets_and_bad_files() {
    let ws = workspace();
    let (index, report) = build(ws.path(), DEFAULT_MAX_BYTES, &|_| {});
    let files: Vec<&str> = index.files.keys().map(String::as_str).collect();
    assert_eq!(files, ["src/input.rs", "src/lib.rs", "src/main.rs"]);
    let skipped: Vec<String> = report
        .skipped
        .iter()
        .map(|(p, why)| format!("{p}: {why}"))
        .collect();
    assert_eq!(skipped.len(), 3, "{skipped:?}");
    assert!(
        skipped.iter().any(|s| s.starts_with("src/blob.rs: binary")),
        "{skipped:?}"
    );
    assert!(
        skipped
            .iter()
            .any(|s| s.starts_with("src/latin1.rs: not UTF-8")),
        "{skipped:?}"
    );
    assert!(
        skipped
            .iter()
            .any(|s| s.starts_with("src/big.rs") && s.contains("size limit")),
        "{skipped:?}"
    );
    let st = index.stats();
    assert_eq!((st.files, st.symbols), (3, 3));
}

#[test]
fn context_holds_the_definition_from_the_other_file_and_stays_put_within_a_line() {
    let ws = workspace();
    let (index, _) = build(ws.path(), DEFAULT_MAX_BYTES, &|_| {});
    let read = |p: &str| std::fs::read_to_string(ws.path().join(p)).ok();
    let cursor = MAIN.find("let top = ").unwrap() + "let top = ".len();
    let before = &MAIN[..MAIN[..cursor].rfind('\n').unwrap() + 1];
    let ctx = related_definitions(&index, "src/main.rs", before, 60, 2000, &read);
    let paths: Vec<&str> = ctx.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(paths, ["src/input.rs", "src/lib.rs"]);
    assert!(
        ctx[1]
            .1
            .contains("pub fn word_histogram(text: &str) -> HashMap<String, usize>"),
        "{ctx:?}"
    );
    assert!(
        ctx[1].1.contains("Counts how often each word occurs"),
        "{ctx:?}"
    );
    // Typing on the cursor's line does not change what comes before it, so neither does the context.
    let typed = MAIN.replace("let top = ", "let top = counts.iter().max_by_key(");
    let before2 = &typed[..typed[..cursor].rfind('\n').unwrap() + 1];
    assert_eq!(
        related_definitions(&index, "src/main.rs", before2, 60, 2000, &read),
        ctx
    );
    // Nothing from ignored or secret files, whatever the names used.
    let all: String = ctx.iter().map(|(p, t)| format!("{p}{t}")).collect();
    assert!(!all.contains("hunter2") && !all.contains("ignored_fn"));
}

#[test]
fn updating_and_removing_one_file() {
    let ws = workspace();
    let (mut index, _) = build(ws.path(), DEFAULT_MAX_BYTES, &|_| {});
    let mut parser = nib_indexer::SymbolParser::new();
    index.update(
        &mut parser,
        "src/lib.rs",
        nib_indexer::Lang::Rust,
        "pub fn renamed() {}\n",
    );
    assert!(index.definitions("word_histogram").is_empty());
    assert_eq!(index.definitions("renamed").len(), 1);
    index.remove("src/lib.rs");
    assert!(index.definitions("renamed").is_empty());
    assert_eq!(index.files.len(), 2);
}

/// Imports first: a glob import brings the imported module's public API even before it is used
/// (the function the user is about to call), and a name used near the cursor resolves to the
/// imported file's definition even where the rest of the repository defines it many times.
#[test]
fn context_follows_imports_first() {
    let dir = tempfile::tempdir().unwrap();
    let r = dir.path();
    write(
        r,
        "Cargo.toml",
        b"[package]\nname = \"word-stats\"\nversion = \"0.1.0\"\n",
    );
    write(
        r,
        "src/lib.rs",
        b"//! Word statistics.\npub mod render;\n\n/// Counts how often each word occurs.\npub fn word_histogram(text: &str) -> Vec<(String, usize)> { vec![] }\n\nfn private_helper() {}\n",
    );
    write(
        r,
        "src/render.rs",
        b"/// Formats a table.\npub fn format(rows: &[(String, usize)]) -> String { String::new() }\n",
    );
    for i in 0..5 {
        write(
            r,
            &format!("other/m{i}.rs"),
            b"pub fn format(x: u32) -> String { String::new() }\n",
        );
    }
    let main = "use word_stats::*;\nuse word_stats::render::format;\n\nfn main() {\n    let text = String::new();\n    let table = format(&rows);\n    let histogram = \n}\n";
    write(r, "src/main.rs", main.as_bytes());
    let (index, _) = build(r, DEFAULT_MAX_BYTES, &|_| {});
    let read = |p: &str| std::fs::read_to_string(r.join(p)).ok();
    assert_eq!(
        index.crates.get("word_stats").map(String::as_str),
        Some("src/")
    );

    let cursor = main.find("let histogram = ").unwrap();
    let before = &main[..main[..cursor].rfind('\n').unwrap() + 1];
    let ctx = related_definitions(&index, "src/main.rs", before, 60, 2000, &read);
    let all: String = ctx.iter().map(|(p, t)| format!("== {p}\n{t}\n")).collect();
    eprintln!("{all}");
    let paths: Vec<&str> = ctx.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(paths, ["src/lib.rs", "src/render.rs"], "{all}");
    assert!(all.contains("pub fn word_histogram(text: &str)"), "{all}");
    assert!(all.contains("Counts how often each word occurs"), "{all}");
    assert!(
        all.contains("pub fn format(rows: &[(String, usize)])"),
        "{all}"
    );
    assert!(
        !all.contains("private_helper"),
        "a glob import sees public items only: {all}"
    );
    assert!(
        !all.contains("format(x: u32)"),
        "the imported `format`, not the others: {all}"
    );
}

/// The on-disk cache: a second start takes every unchanged file from it; an edited file is
/// parsed again, a deleted one drops out; a corrupt, truncated or other-version cache is
/// discarded with a note and rebuilt, never trusted.
#[test]
fn on_disk_cache_warm_start_and_bad_caches() {
    let ws = workspace();
    let root = ws.path();
    let cache_dir = tempfile::tempdir().unwrap();
    let cache = cache_dir.path().join("ws.idx");
    let files = nib_indexer::walk::source_files(root);
    let run =
        || nib_indexer::walk::build_files(root, &files, DEFAULT_MAX_BYTES, Some(&cache), &|_| {});

    let (cold, r) = run();
    assert_eq!(r.from_cache, 0);
    assert!(
        r.cache_note
            .as_deref()
            .is_some_and(|n| n.contains("no cache yet")),
        "{r:?}"
    );
    assert!(cache.is_file());
    let (warm, r) = run();
    assert_eq!((r.from_cache, r.cache_note.as_deref()), (3, None), "{r:?}");
    assert_eq!(
        serde_json_like(&warm),
        serde_json_like(&cold),
        "the cache gives back what parsing gave"
    );

    // An edit: that file alone is parsed again.
    std::thread::sleep(std::time::Duration::from_millis(20));
    write(
        root,
        "src/input.rs",
        b"/// Reads a file.\npub fn read_file(path: &str) -> String { String::new() }\n",
    );
    let (edited, r) = run();
    assert_eq!(r.from_cache, 2, "{r:?}");
    assert!(!edited.definitions("read_file").is_empty());
    assert!(edited.definitions("read_input").is_empty());

    // Bad caches: a note, a full rebuild, and a good cache again afterwards.
    let good = std::fs::read(&cache).unwrap();
    let mut other_format = good.clone();
    other_format[8] = other_format[8].wrapping_add(1);
    for (what, bytes, note) in [
        (
            "garbage",
            b"not a cache at all".to_vec(),
            "not an index cache",
        ),
        ("truncated", good[..good.len() / 2].to_vec(), "truncated"),
        ("another format", other_format, "format"),
        ("empty", Vec::new(), "not an index cache"),
    ] {
        std::fs::write(&cache, &bytes).unwrap();
        let (index, r) = run();
        assert_eq!(r.from_cache, 0, "{what}");
        let n = r.cache_note.unwrap_or_default();
        assert!(
            n.contains(note) && n.contains("from scratch"),
            "{what}: {n}"
        );
        assert_eq!(index.files.len(), 3, "{what}");
        // Entries read before the cache turned out bad are not kept half-way.
        assert_eq!(serde_json_like(&index), serde_json_like(&edited), "{what}");
        let (_, r) = run();
        assert_eq!((r.from_cache, r.cache_note), (3, None), "{what}: rewritten");
    }
    // The same workspace named another way (`dir/.`) is the same workspace.
    let dotted = root.join(".");
    let (_, r) =
        nib_indexer::walk::build_files(&dotted, &files, DEFAULT_MAX_BYTES, Some(&cache), &|_| {});
    assert_eq!((r.from_cache, r.cache_note), (3, None));
    // A cache of another workspace is not used for this one.
    let other = workspace();
    let other_files = nib_indexer::walk::source_files(other.path());
    let (_, r) = nib_indexer::walk::build_files(
        other.path(),
        &other_files,
        DEFAULT_MAX_BYTES,
        Some(&cache),
        &|_| {},
    );
    assert!(r.cache_note.unwrap_or_default().contains("belongs to"));
}

/// Symbol names and lines per file: what a comparison of two indexes needs.
fn serde_json_like(index: &nib_indexer::Index) -> Vec<(String, Vec<(String, u32)>)> {
    index
        .files
        .iter()
        .map(|(p, e)| {
            let syms = e
                .symbols
                .symbols
                .iter()
                .map(|s| (s.name.to_string(), s.start_line))
                .collect();
            (p.clone(), syms)
        })
        .collect()
}

/// Files that vanish between the listing and the reading (deleted during the walk), or that
/// cannot be read (here a directory with a source file's name: as root, permissions would not
/// stop a read), are skipped with the reason; the rest is indexed.
#[test]
fn files_deleted_during_the_walk_or_unreadable_are_skipped() {
    let ws = workspace();
    let root = ws.path();
    let mut files = nib_indexer::walk::source_files(root);
    std::fs::create_dir_all(root.join("src/dir.rs")).unwrap();
    files.push((root.join("src/deleted.rs"), "src/deleted.rs".into()));
    files.push((root.join("src/dir.rs"), "src/dir.rs".into()));
    std::fs::remove_file(root.join("src/input.rs")).unwrap();
    let (index, report) =
        nib_indexer::walk::build_files(root, &files, DEFAULT_MAX_BYTES, None, &|_| {});
    let skipped: Vec<String> = report
        .skipped
        .iter()
        .map(|(p, why)| format!("{p}: {why}"))
        .collect();
    for p in ["src/deleted.rs", "src/dir.rs", "src/input.rs"] {
        assert!(
            skipped
                .iter()
                .any(|s| s.starts_with(p) && s.contains("unreadable")),
            "{p}: {skipped:?}"
        );
    }
    let files: Vec<&str> = index.files.keys().map(String::as_str).collect();
    assert_eq!(files, ["src/lib.rs", "src/main.rs"]);
    assert!(!index.definitions("word_histogram").is_empty());
}

/// Similar code from other files: the chunk that resembles the lines before the cursor comes
/// first (rare shared names weigh most), never from the current file, and the same while the
/// user types within the line.
#[test]
fn similar_chunks_find_the_code_that_looks_like_the_cursors() {
    let dir = tempfile::tempdir().unwrap();
    let r = dir.path();
    write(
        r,
        "src/csv.rs",
        b"pub fn parse_header(line: &str) -> Vec<String> {\n    line.split(',').map(|f| f.trim().to_string()).collect()\n}\n\npub fn parse_record(line: &str, header: &[String]) -> Vec<(String, String)> {\n    let fields: Vec<&str> = line.split(',').collect();\n    header.iter().cloned().zip(fields.iter().map(|f| f.trim().to_string())).collect()\n}\n",
    );
    write(
        r,
        "src/net.rs",
        b"pub fn connect(host: &str, port: u16) -> std::io::Result<std::net::TcpStream> {\n    std::net::TcpStream::connect((host, port))\n}\n",
    );
    write(
        r,
        "src/math.rs",
        b"pub fn mean(xs: &[f64]) -> f64 {\n    xs.iter().sum::<f64>() / xs.len() as f64\n}\n",
    );
    let main = "fn load(text: &str) {\n    let mut lines = text.lines();\n    let header = parse_header(lines.next().unwrap_or(\"\"));\n    for line in lines {\n        let fields: Vec<&str> = line.split(',').collect();\n        \n    }\n}\n";
    write(r, "src/main.rs", main.as_bytes());
    let (index, _) = build(r, DEFAULT_MAX_BYTES, &|_| {});
    let cursor = main.find("        \n").unwrap() + 8;
    let before = &main[..main[..cursor].rfind('\n').unwrap() + 1];
    let hits = nib_indexer::context::similar_chunks(&index, "src/main.rs", before, 15, 3);
    eprintln!("{hits:?}");
    assert!(!hits.is_empty());
    assert_eq!(
        (hits[0].path.as_str(), hits[0].start_line, hits[0].end_line),
        ("src/csv.rs", 4, 7),
        "parse_record is the look-alike: {hits:?}"
    );
    assert!(hits
        .iter()
        .all(|h| h.path != "src/main.rs" && h.path != "src/net.rs"));
    let typed = main.replace("        \n", "        let rec = header.iter()\n");
    let before2 = &typed[..typed[..cursor].rfind('\n').unwrap() + 1];
    assert_eq!(
        nib_indexer::context::similar_chunks(&index, "src/main.rs", before2, 15, 3),
        hits
    );
}

/// The file's own text outside the window: the imports above it, and the stretch (above or
/// below it) most like the lines before the cursor, never anything inside the window, within
/// the budget.
#[test]
fn outside_window_brings_the_imports_and_the_look_alike_stretch() {
    use nib_indexer::context::outside_window;
    use nib_indexer::Lang;
    let imports = "use std::collections::HashMap;\nuse crate::csv::{\n    parse_header,\n};\n";
    let filler = |name: &str| {
        (0..30)
            .map(|i| format!("fn {name}_{i}(n: u64) -> u64 {{\n    n.wrapping_mul({i})\n}}\n"))
            .collect::<String>()
    };
    let look_alike = "fn load_record(line: &str, header: &[String]) -> HashMap<String, String> {\n    let fields: Vec<&str> = line.split(',').collect();\n    header.iter().cloned().zip(fields.iter().map(|f| f.trim().to_string())).collect()\n}\n";
    let window = "fn load(text: &str) {\n    let header = parse_header(text.lines().next().unwrap_or(\"\"));\n    for line in text.lines().skip(1) {\n        let fields: Vec<&str> = line.split(',').collect();\n        \n    }\n}\n";
    let text = format!(
        "//! Loading.\n{imports}\n{}{window}{}{look_alike}{}",
        filler("above"),
        filler("near"),
        filler("below")
    );
    let start = text.find(window).unwrap();
    let cursor = start + window.find("        \n").unwrap() + 8;
    // The window: its own lines and the 30 short functions after it.
    let end = text.find(look_alike).unwrap() - filler("near").len() / 2;
    let end = text[..end].rfind('\n').unwrap() + 1;
    let (above, below) = outside_window(Lang::Rust, &text, start..end, cursor, 1500);
    assert_eq!(above, vec![imports.to_string()], "{above:?}");
    assert_eq!(below.len(), 1, "{below:?}");
    assert!(below[0].contains(look_alike), "{below:?}");
    assert!(!below[0].contains("fn load(text"), "{below:?}");
    let all: usize = above.iter().chain(&below).map(String::len).sum();
    assert!(all <= 1500, "{all}");
    // A budget too small for any stretch: the imports alone, if they fit in half of it.
    let (above, below) = outside_window(Lang::Rust, &text, start..end, cursor, 150);
    assert_eq!((above, below), (vec![imports.to_string()], vec![]));
    let (above, below) = outside_window(Lang::Rust, &text, start..end, cursor, 100);
    assert_eq!(
        (above, below),
        (vec!["use std::collections::HashMap;\n".to_string()], vec![])
    );
    let (above, below) = outside_window(Lang::Rust, &text, start..end, cursor, 40);
    assert_eq!((above, below), (vec![], vec![]));
    // A window holding the whole file leaves nothing outside it.
    let (above, below) = outside_window(Lang::Rust, &text, 0..text.len(), cursor, 1500);
    assert_eq!((above, below), (vec![], vec![]));
}

/// Writing a cache deletes the caches beside it whose workspace is gone, and nothing else.
#[test]
fn caches_of_deleted_workspaces_are_pruned() {
    let cache_dir = tempfile::tempdir().unwrap();
    let index_at = |root: &std::path::Path, name: &str| {
        let files = nib_indexer::walk::source_files(root);
        let cache = cache_dir.path().join(name);
        nib_indexer::walk::build_files(root, &files, DEFAULT_MAX_BYTES, Some(&cache), &|_| {});
        cache
    };
    let gone = workspace();
    let gone_cache = index_at(gone.path(), "gone.idx");
    let kept = workspace();
    let kept_cache = index_at(kept.path(), "kept.idx");
    let foreign = cache_dir.path().join("not-a-cache.idx");
    std::fs::write(&foreign, b"something else").unwrap();
    assert!(gone_cache.is_file() && kept_cache.is_file());
    drop(gone);
    let here = workspace();
    let here_cache = index_at(here.path(), "here.idx");
    assert!(
        !gone_cache.exists(),
        "the deleted workspace's cache is pruned"
    );
    assert!(kept_cache.is_file() && here_cache.is_file() && foreign.is_file());
}
