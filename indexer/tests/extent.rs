//! `extent`: one line or a block, from the syntax tree at the cursor; golden cases per language
//! in `tests/fixtures/extent.txt`.

use nib_indexer::extent::{extent, Extent};
use nib_indexer::Lang;

fn lang_named(name: &str) -> Lang {
    Lang::ALL
        .into_iter()
        .find(|l| l.name() == name)
        .unwrap_or_else(|| panic!("no language named {name}"))
}

#[test]
fn golden_cases() {
    let data = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/extent.txt"
    ))
    .unwrap();
    let mut failures = Vec::new();
    let mut cases = 0;
    let mut langs = std::collections::BTreeSet::new();
    for case in data.split("\n## ").skip(1) {
        let (head, body) = case.split_once('\n').unwrap();
        let (lang, what) = head.split_once(": ").unwrap();
        let (src, want) = body.rsplit_once("\n-> ").unwrap();
        let want = match want.trim() {
            "line" => Extent::Line,
            "block" => Extent::Block,
            other => panic!("{head}: unknown verdict {other}"),
        };
        let cursor = src.find('|').unwrap_or_else(|| panic!("{head}: no cursor"));
        let text = src.replacen('|', "", 1);
        let got = extent(lang_named(lang), &text, cursor);
        cases += 1;
        langs.insert(lang.to_string());
        if got != want {
            failures.push(format!("{lang}: {what}: got {got:?}, want {want:?}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(
        cases >= 30 && langs.len() == Lang::ALL.len(),
        "{cases} cases, {langs:?}"
    );
}
