//! The GGUF tokenizer agrees token for token with an independent implementation (Hugging Face
//! `tokenizers`, see scripts/tokenizer_reference.py) on real source files of several languages,
//! non-ASCII text, long whitespace runs and CRLF line ends.

mod common;

use nib_model::gguf::GgufFile;
use nib_model::Tokenizer;
use std::collections::BTreeMap;
use std::path::Path;

#[test]
fn matches_reference_ids_on_real_files() {
    let g = GgufFile::open(&common::real_model()).expect("open model");
    let tok = Tokenizer::from_gguf(&g).expect("tokenizer");
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let reference: BTreeMap<String, Vec<u32>> =
        serde_json::from_str(&std::fs::read_to_string(dir.join("tokenizer_ids.json")).unwrap())
            .unwrap();
    assert!(reference.len() >= 50, "need at least 50 fixture files");
    let mut bytes = 0;
    let mut failures = Vec::new();
    for (name, want) in &reference {
        let text = std::fs::read_to_string(dir.join("tokenizer").join(name)).unwrap();
        bytes += text.len();
        let got = tok.encode(&text);
        if &got != want {
            let at = got.iter().zip(want).take_while(|(a, b)| a == b).count();
            failures.push(format!(
                "{name}: first difference at token {at}: got {:?}, want {:?} (context {:?})",
                got.get(at..at + 3),
                want.get(at..at + 3),
                tok.decode(&want[at.saturating_sub(3)..(at + 3).min(want.len())])
            ));
        }
        assert_eq!(tok.decode(&got), text, "{name}: decode(encode(x)) != x");
    }
    assert!(bytes >= 200_000, "fixtures hold only {bytes} bytes");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The cache of lines (`Tokenizer::encode`) gives the ids of the whole text encoded at once:
/// on the fixture files, on each of them edited the way typing edits them, and on whitespace
/// runs that cross line breaks, encoded cold and again from the cache.
#[test]
fn the_line_cache_gives_the_ids_of_the_whole_text() {
    let g = GgufFile::open(&common::real_model()).expect("open model");
    let tok = Tokenizer::from_gguf(&g).expect("tokenizer");
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tokenizer");
    let mut texts: Vec<String> = [
        "a\n  \nb",
        "x  \n\n    y",
        ";\n\n  z",
        "\r\n\r\n\tq",
        "\n",
        "  \n  ",
        "end\n   ",
        "a\u{a0}\n\u{a0}b",
        "\u{2028}\n x",
        "f(\n)\n\n\n}\n",
        "é\n ü",
        "\t\n\t\n",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        // Typed into: a character added in the middle of a line, and a line break.
        let boundary = |from: usize| (from..=text.len()).find(|&i| text.is_char_boundary(i));
        let half = boundary(text.len() / 2).unwrap();
        let mid = boundary(text[..half].rfind('\n').map_or(0, |i| i + 1) + 1).unwrap();
        for typed in ["x", "\n", "  "] {
            texts.push(format!("{}{typed}{}", &text[..mid], &text[mid..]));
        }
        texts.push(text);
    }
    for text in &texts {
        let whole = tok.encode_whole(text);
        assert_eq!(tok.encode(text), whole, "{text:?}");
        assert_eq!(tok.encode(text), whole, "{text:?}, from the cache");
    }
}

#[test]
fn special_tokens_are_text_unless_asked() {
    let g = GgufFile::open(&common::real_model()).expect("open model");
    let tok = Tokenizer::from_gguf(&g).expect("tokenizer");
    let text = "a<|endoftext|>b<|fim_prefix|>";
    let literal = tok.encode(text);
    assert!(!literal.contains(&151643) && !literal.contains(&151659));
    assert_eq!(tok.decode(&literal), text);
    let parsed = tok.encode_with_special(text);
    assert!(
        parsed.contains(&151643) && parsed.contains(&151659),
        "{parsed:?}"
    );
    // The ids DESIGN.md names.
    for (name, id) in [
        ("<|endoftext|>", 151643),
        ("<|im_end|>", 151645),
        ("<|fim_prefix|>", 151659),
        ("<|fim_middle|>", 151660),
        ("<|fim_suffix|>", 151661),
        ("<|fim_pad|>", 151662),
        ("<|repo_name|>", 151663),
        ("<|file_sep|>", 151664),
    ] {
        assert_eq!(tok.token_id(name), Some(id), "{name}");
    }
}
