//! `nib` as a user runs it: exit codes, one-line errors, JSON output.

mod common;

use std::io::Write;
use std::process::{Command, Output, Stdio};

fn nib(args: &[&str], env: &[(&str, &str)], stdin: Option<&[u8]>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_nib"));
    cmd.args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("run nib");
    if let Some(bytes) = stdin {
        child.stdin.take().unwrap().write_all(bytes).unwrap();
    }
    drop(child.stdin.take());
    child.wait_with_output().unwrap()
}

/// Asserts the exit code and a single-line error that contains `needle`.
fn fails(out: &Output, code: i32, needle: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "stderr: {err}");
    assert!(
        !err.contains("panicked") && !err.contains("backtrace"),
        "{err}"
    );
    assert_eq!(err.trim_end().lines().count(), 1, "not one line: {err}");
    assert!(err.contains(needle), "{needle:?} not in {err}");
}

/// Asserts a zero exit, showing stderr otherwise.
fn succeeds(out: &Output) {
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn tiny_model(dir: &std::path::Path) -> String {
    let p = dir.join("tiny.gguf");
    nib_model::tiny::write(&p, &Default::default()).unwrap();
    p.to_string_lossy().into_owned()
}

#[test]
fn usage_errors_exit_2() {
    let out = nib(&[], &[], None);
    assert_eq!(out.status.code(), Some(2));
    let out = nib(&["complete", "no-position"], &[], None);
    fails(&out, 2, "FILE:LINE:COL");
    let out = nib(&["complete", "x.rs:a:1"], &[], None);
    fails(&out, 2, "FILE:LINE:COL");
    let out = nib(
        &["complete", "x.rs:1:1", "--multiline", "sometimes"],
        &[],
        None,
    );
    assert_eq!(out.status.code(), Some(2));
    let out = nib(&["complete", "x.rs:1:1", "--backend", "tpu"], &[], None);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn position_past_the_end_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("a.rs");
    std::fs::write(&f, "fn a() {}\nfn b() {}\n").unwrap();
    let model = tiny_model(dir.path());
    for pos in ["4:1", "1:11", "0:1", "1:0"] {
        let arg = format!("{}:{pos}", f.display());
        let out = nib(&["complete", &arg, "--model", &model], &[], None);
        fails(&out, 2, "a.rs");
    }
    // The end of a line and the empty last line are valid.
    for pos in ["1:10", "3:1"] {
        let arg = format!("{}:{pos}", f.display());
        let out = nib(&["complete", &arg, "--model", &model], &[], None);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{pos}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn unreadable_binary_and_non_utf8_files_exit_1() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    let out = nib(
        &["complete", "/nonexistent/x.rs:1:1", "--model", &model],
        &[],
        None,
    );
    fails(&out, 1, "cannot read");
    let bin = dir.path().join("blob.rs");
    std::fs::write(&bin, b"\x7fELF\x02\x01\x01\0\0\0binary").unwrap();
    let out = nib(
        &[
            "complete",
            &format!("{}:1:1", bin.display()),
            "--model",
            &model,
        ],
        &[],
        None,
    );
    fails(&out, 1, "binary");
    let latin1 = dir.path().join("latin1.rs");
    std::fs::write(&latin1, b"// caf\xe9\nfn main() {}\n").unwrap();
    let out = nib(
        &[
            "complete",
            &format!("{}:1:1", latin1.display()),
            "--model",
            &model,
        ],
        &[],
        None,
    );
    fails(&out, 1, "UTF-8");
}

#[test]
fn missing_and_corrupt_models_exit_1_and_say_how_to_fix_it() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("a.rs");
    std::fs::write(&f, "fn main() {}\n").unwrap();
    let pos = format!("{}:1:1", f.display());
    let out = nib(
        &["complete", &pos],
        &[("NIB_MODEL", "/nonexistent/m.gguf")],
        None,
    );
    fails(&out, 1, "nib model pull");
    let junk = dir.path().join("junk.gguf");
    std::fs::write(&junk, "not a model").unwrap();
    let out = nib(
        &["complete", &pos, "--model", junk.to_str().unwrap()],
        &[],
        None,
    );
    fails(&out, 1, "not a GGUF file");
    let truncated = dir.path().join("cut.gguf");
    let bytes = std::fs::read(tiny_model(dir.path())).unwrap();
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let out = nib(
        &["complete", &pos, "--model", truncated.to_str().unwrap()],
        &[],
        None,
    );
    fails(&out, 1, "truncated");
}

#[test]
fn json_output_has_the_documented_fields() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    let src = b"fn main() {\n    let x = 1;\n}\n";
    // The buffer comes from stdin; the file itself need not exist.
    let out = nib(
        &[
            "complete",
            "virtual/main.rs:2:5",
            "--stdin",
            "--json",
            "--model",
            &model,
            "--max-tokens",
            "8",
        ],
        &[],
        Some(src),
    );
    succeeds(&out);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    assert!(v["completion"].is_string());
    assert_eq!(v["model"], "nib tiny test model");
    assert!(v["prompt_tokens"].as_u64().unwrap() > 10);
    assert!(v["generated_tokens"].as_u64().unwrap() <= 8);
    for k in ["total", "load", "prefill", "decode"] {
        assert!(v["latency_ms"][k].as_f64().unwrap() >= 0.0, "{k}");
    }
}

/// A long file's imports, cut off by the window near the cursor, come back at the start of the
/// prefix, once; where the window holds them, they are not repeated.
#[test]
fn a_long_files_imports_come_back_above_the_window_once() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    let root = dir.path().join("ws");
    std::fs::create_dir_all(root.join("src")).unwrap();
    let imports =
        "use std::collections::HashMap;\nuse crate::shapes::{\n    Shape,\n    area,\n};\n";
    let mut text = format!("//! Totals.\n{imports}\n");
    for i in 0..400 {
        text.push_str(&format!("pub fn total_{i}(m: &HashMap<u32, Shape>) -> f64 {{\n    m.values().map(area).sum::<f64>() * {i}.0\n}}\n"));
    }
    std::fs::write(root.join("src/lib.rs"), &text).unwrap();
    std::fs::write(
        root.join("src/shapes.rs"),
        "pub struct Shape;\npub fn area(s: &Shape) -> f64 { 1.0 }\n",
    )
    .unwrap();
    let prompt = |line: usize| {
        let out = nib(
            &[
                "context",
                &format!("{}:{line}:5", root.join("src/lib.rs").display()),
                "--root",
                root.to_str().unwrap(),
                "--model",
                &model,
            ],
            &[],
            None,
        );
        succeeds(&out);
        String::from_utf8(out.stdout).unwrap()
    };
    // Near the end: the window starts far below the imports.
    let far = prompt(999);
    let after_marker = far.split("<|fim_prefix|>").nth(1).expect("a FIM prompt");
    assert!(
        after_marker.starts_with(&format!("{imports}\n")),
        "imports not at the start of the prefix:\n{after_marker}"
    );
    assert_eq!(
        far.matches("use std::collections::HashMap;").count(),
        1,
        "{far}"
    );
    assert!(
        !far.contains("//! Totals."),
        "only the imports come back:\n{far}"
    );
    // Near the top: the window holds them already.
    let near = prompt(12);
    assert_eq!(
        near.matches("use std::collections::HashMap;").count(),
        1,
        "{near}"
    );
    assert_eq!(near.matches("    Shape,\n").count(), 1, "{near}");
}

#[test]
fn real_model_completes_the_demo_in_plain_mode() {
    let model = common::real_model();
    let demo = concat!(env!("CARGO_MANIFEST_DIR"), "/demo/wordcount.rs");
    let out = nib(
        &[
            "complete",
            &format!("{demo}:7:9"),
            "--model",
            model.to_str().unwrap(),
        ],
        &[],
        None,
    );
    succeeds(&out);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("counts.entry("), "{text}");
}
