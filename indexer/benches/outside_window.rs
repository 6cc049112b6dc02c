//! `context::outside_window`, which runs for every prompt the completer builds: the file's own
//! imports above the window and the stretches like the code at the cursor, for a cursor in the
//! middle of a 2,000-line and an 8,000-line Rust file (nib's own sources, repeated), with a
//! window of ~120 lines around it.

use criterion::{criterion_group, criterion_main, Criterion};
use nib_indexer::context::outside_window;
use nib_indexer::Lang;

const SOURCES: &[&str] = &[
    include_str!("../../lsp/src/server.rs"),
    include_str!("../../lsp/src/engine.rs"),
    include_str!("../../model/src/transformer.rs"),
    include_str!("../../model/src/kernels.rs"),
];

fn lines(n: usize) -> String {
    let mut lines: Vec<&str> = Vec::new();
    while lines.len() < n {
        for s in SOURCES {
            lines.extend(s.lines());
        }
    }
    lines.truncate(n);
    lines.join("\n") + "\n"
}

fn own_text(c: &mut Criterion) {
    for n in [2000, 8000] {
        let text = lines(n);
        let line_at = |k: usize| {
            text.match_indices('\n')
                .nth(k - 1)
                .map_or(0, |(i, _)| i + 1)
        };
        let cursor = line_at(n / 2) + 4;
        let window = line_at(n / 2 - 100)..line_at(n / 2 + 20);
        c.bench_function(&format!("outside_window, {n}-line Rust file"), |b| {
            b.iter(|| outside_window(Lang::Rust, &text, window.clone(), cursor, 1500))
        });
    }
}

criterion_group!(benches, own_text);
criterion_main!(benches);
