//! Compares, on every Rust file under a directory, what the index finds when tree-sitter
//! parses each file's skeleton (the default) and its whole text: symbols, headers, parents,
//! chunks and identifiers must agree (`has_errors` aside). Prints the files that differ and
//! both parsers' throughput.
//!
//! `cargo run --release -p nib-indexer --example skeleton_check -- ~/.cargo/registry/src/*/`

use nib_indexer::{skeleton, walk, Lang, SymbolParser};
use std::time::Instant;

fn main() {
    let Some(root) = std::env::args().nth(1) else {
        eprintln!("usage: skeleton_check DIR");
        std::process::exit(2);
    };
    let files = walk::source_files(std::path::Path::new(&root));
    let (mut whole, mut sk) = (SymbolParser::new().whole_text(), SymbolParser::new());
    let (mut t_whole, mut t_sk) = (0.0, 0.0);
    let (mut n, mut bytes, mut sk_bytes, mut differ, mut without) = (0, 0, 0, 0, 0);
    for (abs, rel) in &files {
        let Ok(text) = walk::read_source(abs, walk::DEFAULT_MAX_BYTES) else {
            continue;
        };
        if Lang::detect(abs, &text) != Some(Lang::Rust) {
            continue;
        }
        n += 1;
        bytes += text.len();
        match skeleton::rust(&text) {
            Some(s) => sk_bytes += s.text.len(),
            None => {
                without += 1;
                println!("no skeleton: {rel}");
            }
        }
        let t = Instant::now();
        let mut a = whole.parse(Lang::Rust, &text);
        t_whole += t.elapsed().as_secs_f64();
        let t = Instant::now();
        let mut b = sk.parse(Lang::Rust, &text);
        t_sk += t.elapsed().as_secs_f64();
        (a.has_errors, b.has_errors) = (false, false);
        if a != b {
            differ += 1;
            let names = |f: &nib_indexer::symbols::FileSymbols| -> Vec<(String, u32)> {
                f.symbols
                    .iter()
                    .map(|s| (s.name.to_string(), s.start_line + 1))
                    .collect()
            };
            let (na, nb) = (names(&a), names(&b));
            let only_whole: Vec<_> = na.iter().filter(|x| !nb.contains(x)).take(5).collect();
            let only_sk: Vec<_> = nb.iter().filter(|x| !na.contains(x)).take(5).collect();
            println!("differs: {rel}: whole text only {only_whole:?}; skeleton only {only_sk:?}");
        }
    }
    let mb = bytes as f64 / 1e6;
    println!(
        "{n} Rust files, {mb:.1} MB, skeletons {:.1} MB; {differ} differ, {without} without a \
         skeleton; one thread: whole text {t_whole:.2} s ({:.1} MB/s), skeleton {t_sk:.2} s \
         ({:.1} MB/s)",
        sk_bytes as f64 / 1e6,
        mb / t_whole,
        mb / t_sk
    );
}
