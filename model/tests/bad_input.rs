//! Bad model files give one clear error each, never a panic.

mod common;

use nib_model::{load_backend, BackendKind, ModelError};
use std::io::Write;

fn load(path: &std::path::Path) -> ModelError {
    match load_backend(BackendKind::Cpu, path) {
        Ok(_) => panic!("{} loaded", path.display()),
        Err(e) => e,
    }
}

fn one_line(e: &ModelError) -> String {
    let s = e.to_string();
    assert!(!s.contains('\n'), "multi-line error: {s}");
    s
}

#[test]
fn missing_file() {
    let e = load(std::path::Path::new("/nonexistent/model.gguf"));
    assert!(matches!(e, ModelError::NotFound { .. }), "{e}");
    assert!(one_line(&e).contains("nib model pull"));
}

#[test]
fn not_a_gguf_file() {
    let dir = tempfile::tempdir().unwrap();
    for (name, bytes) in [
        ("text.gguf", b"hello, this is not a model".as_slice()),
        ("empty.gguf", b"".as_slice()),
        ("short.gguf", b"GG".as_slice()),
    ] {
        let p = dir.path().join(name);
        std::fs::write(&p, bytes).unwrap();
        let e = load(&p);
        assert!(matches!(e, ModelError::NotGguf { .. }), "{name}: {e}");
        one_line(&e);
    }
    let e = load(dir.path());
    assert!(matches!(e, ModelError::Unreadable { .. }), "{e}");
}

#[test]
fn truncated_gguf() {
    let dir = tempfile::tempdir().unwrap();
    let full = common::tiny_model(dir.path());
    let bytes = std::fs::read(&full).unwrap();
    // Cut in the tensor data, and in the header.
    for cut in [bytes.len() - 100, bytes.len() / 2, 40] {
        let p = dir.path().join(format!("cut{cut}.gguf"));
        std::fs::File::create(&p)
            .unwrap()
            .write_all(&bytes[..cut])
            .unwrap();
        let e = load(&p);
        assert!(
            matches!(e, ModelError::Truncated { .. } | ModelError::Corrupt { .. }),
            "cut at {cut}: {e}"
        );
        one_line(&e);
    }
    let p = dir.path().join("tail.gguf");
    std::fs::write(&p, &bytes[..bytes.len() - 100]).unwrap();
    assert!(matches!(load(&p), ModelError::Truncated { .. }));
}

#[test]
fn unsupported_architecture_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("mamba.gguf");
    let cfg = nib_model::tiny::TinyConfig {
        arch: "mamba",
        ..Default::default()
    };
    nib_model::tiny::write(&p, &cfg).unwrap();
    let e = load(&p);
    assert!(matches!(e, ModelError::UnsupportedArch { .. }), "{e}");
    assert!(one_line(&e).contains("mamba"));
}
