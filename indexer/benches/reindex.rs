//! Re-indexing one edited file of 2,000 lines (issue #4: ≤ 5 ms median): what the server does
//! for the document being typed in. The file is nib's own Rust source, cut to 2,000 lines; each
//! iteration indexes it with one character typed in the middle (or taken out again), from
//! scratch and incrementally, and with one character typed into a function's name.

use criterion::{criterion_group, criterion_main, Criterion};
use nib_indexer::{Index, Lang, SymbolParser};

const SOURCES: &[&str] = &[
    include_str!("../../lsp/src/server.rs"),
    include_str!("../../lsp/src/engine.rs"),
    include_str!("../../model/src/transformer.rs"),
    include_str!("../../model/src/kernels.rs"),
];

fn two_thousand_lines() -> String {
    let mut lines: Vec<&str> = Vec::new();
    while lines.len() < 2000 {
        for s in SOURCES {
            lines.extend(s.lines());
        }
    }
    lines.truncate(2000);
    lines.join("\n") + "\n"
}

fn reindex(c: &mut Criterion) {
    let text = two_thousand_lines();
    let mid = text[..text.len() / 2].rfind('\n').unwrap_or(0) + 1;
    let edited = format!("{}x{}", &text[..mid], &text[mid..]);
    let mut parser = SymbolParser::new();
    let mut index = Index::new();
    for i in 0..50 {
        index.update(&mut parser, &format!("src/other{i}.rs"), Lang::Rust, &text);
    }
    let mut flip = false;
    c.bench_function("reindex one 2000-line Rust file, full parse", |b| {
        b.iter(|| {
            flip = !flip;
            let t = if flip { &edited } else { &text };
            index.update(&mut parser, "src/edited.rs", Lang::Rust, t);
        })
    });
    // What the server does for the document being typed in.
    c.bench_function("reindex one 2000-line Rust file, incremental", |b| {
        b.iter(|| {
            flip = !flip;
            let t = if flip { &edited } else { &text };
            index.update_incremental(&mut parser, "src/edited.rs", Lang::Rust, t);
        })
    });
    // A Rust file's skeleton has no function bodies, so the edit above may change nothing
    // tree-sitter sees; typing in a function's header (its name) changes the skeleton too.
    let header = mid
        + text[mid..]
            .find("fn ")
            .expect("a function after the middle")
        + 3;
    let renamed = format!("{}x{}", &text[..header], &text[header..]);
    c.bench_function(
        "reindex one 2000-line Rust file, incremental, edit in a header",
        |b| {
            b.iter(|| {
                flip = !flip;
                let t = if flip { &renamed } else { &text };
                index.update_incremental(&mut parser, "src/edited.rs", Lang::Rust, t);
            })
        },
    );
}

criterion_group!(benches, reindex);
criterion_main!(benches);
