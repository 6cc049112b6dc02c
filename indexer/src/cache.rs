//! The index on disk, so that a restart is ready at once: one file per workspace in the user's
//! cache directory, holding each source file's entry keyed by its path, size and modification
//! time. A file whose size or time changed is parsed again; the rest comes from the cache.
//!
//! The file starts with a magic string, a format version, nib's version and the workspace, then
//! holds one length-prefixed record a source file, so that reading it never needs the whole
//! file in memory beside the index it becomes. Anything else (an older nib, a corrupt or
//! truncated file, another workspace's) is discarded with a note and the index is rebuilt,
//! never trusted. Writes go to a temporary file that is then renamed over the
//! old one, so a crash mid-write leaves the previous cache intact. Each write also deletes the
//! caches beside it whose workspace no longer exists.

use crate::index::{FileEntry, Index};
use serde::{Deserialize, Serialize};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

const MAGIC: &[u8; 8] = b"NIBINDEX";
/// Bump when what the index extracts, or how it is stored, changes.
const FORMAT: u32 = 6;

/// One file as cached: the key (size, modification time) and what the parse gave. Written
/// with the entry borrowed from the index (`Cached<&FileEntry>`), read back owned.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Cached<E = FileEntry> {
    pub size: u64,
    pub mtime_ns: u128,
    pub entry: E,
}

/// The cache file after its magic and format: who wrote it, for which workspace, how many files.
#[derive(Debug, Serialize, Deserialize)]
struct Header<S> {
    nib_version: S,
    root: String,
    files: u64,
}

/// One file's record: its path and its cached entry (borrowed when written, owned when read).
#[derive(Debug, Serialize, Deserialize)]
struct Record<S, E> {
    path: S,
    cached: Cached<E>,
}

/// The workspace's identity: its canonical path (`.` and `/abs/path` are the same workspace).
fn root_key(root: &Path) -> String {
    root.canonicalize()
        .unwrap_or_else(|_| root.to_path_buf())
        .to_string_lossy()
        .into_owned()
}

/// The cache file for the workspace at `root`: `<user cache>/nib/index/<hash>.idx`.
pub fn default_path(root: &Path) -> Option<PathBuf> {
    let key = root_key(root);
    let root = Path::new(&key);
    let hash = key.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    });
    let name = root
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    Some(
        dirs::cache_dir()?
            .join("nib/index")
            .join(format!("{name}-{hash:016x}.idx")),
    )
}

/// The key of a file on disk now.
pub fn key_of(path: &Path) -> Option<(u64, u128)> {
    let m = std::fs::metadata(path).ok()?;
    let mtime = m
        .modified()
        .ok()?
        .duration_since(UNIX_EPOCH)
        .ok()?
        .as_nanos();
    Some((m.len(), mtime))
}

/// Reads the cache of `root` at `path`, handing each file's record to `each` as it is
/// decoded (so that the caller can index one while the next is read); `each` returns `false` to
/// stop early. `Err` says why the cache cannot be used (absent, another version, corrupt,
/// another root): records handed over before a corrupt one must then be dropped too.
pub fn load_each(
    path: &Path,
    root: &Path,
    mut each: impl FnMut(String, Cached) -> bool,
) -> Result<(), String> {
    let (format, mut r) = open(path, 1 << 20)?;
    if format != FORMAT {
        return Err(format!("format {format}, this nib writes {FORMAT}"));
    }
    let mut buf = Vec::new();
    let header: Header<String> = read_record(&mut r, &mut buf)?;
    if header.nib_version != env!("CARGO_PKG_VERSION") {
        return Err(format!("written by nib {}", header.nib_version));
    }
    if header.root != root_key(root) {
        return Err(format!("it belongs to {}", header.root));
    }
    for _ in 0..header.files {
        let rec: Record<String, FileEntry> = read_record(&mut r, &mut buf)?;
        if !each(rec.path, rec.cached) {
            break;
        }
    }
    Ok(())
}

/// A cache file opened through a buffer of `capacity` bytes: its format, and the reader at its
/// header.
fn open(path: &Path, capacity: usize) -> Result<(u32, impl Read), String> {
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err("no cache yet".into()),
        Err(e) => return Err(format!("cannot read it: {e}")),
    };
    let mut r = std::io::BufReader::with_capacity(capacity, file);
    let mut magic = [0u8; 8];
    r.read_exact(&mut magic).map_err(|_| "not an index cache")?;
    if &magic != MAGIC {
        return Err("not an index cache".into());
    }
    let format = read_u32(&mut r).ok_or("truncated")?;
    Ok((format, r))
}

fn read_u32(r: &mut impl Read) -> Option<u32> {
    let mut b = [0u8; 4];
    r.read_exact(&mut b).ok()?;
    Some(u32::from_le_bytes(b))
}

/// A length (u32, little-endian) and that many bytes of postcard.
fn read_record<T: serde::de::DeserializeOwned>(
    r: &mut impl Read,
    buf: &mut Vec<u8>,
) -> Result<T, String> {
    let len = read_u32(r).ok_or("truncated")? as usize;
    if len > 1 << 30 {
        return Err("corrupt (a record of over 1 GB)".into());
    }
    buf.resize(len, 0);
    r.read_exact(buf).map_err(|_| "truncated")?;
    postcard::from_bytes(buf).map_err(|e| format!("corrupt ({e})"))
}

fn write_record<T: Serialize>(
    w: &mut impl Write,
    value: &T,
    buf: &mut Vec<u8>,
) -> std::io::Result<()> {
    buf.clear();
    let bytes = postcard::to_extend(value, std::mem::take(buf)).map_err(std::io::Error::other)?;
    w.write_all(&(bytes.len() as u32).to_le_bytes())?;
    w.write_all(&bytes)?;
    *buf = bytes;
    Ok(())
}

/// Writes the entries of `index` for `keys` (path, size, modification time) atomically: a
/// temporary file beside the cache, then a rename.
pub fn save(
    path: &Path,
    root: &Path,
    index: &Index,
    keys: &[(String, u64, u128)],
) -> std::io::Result<()> {
    let records: Vec<Record<&str, &FileEntry>> = keys
        .iter()
        .filter_map(|(rel, size, mtime_ns)| {
            let entry = index.files.get(rel)?;
            Some(Record {
                path: rel.as_str(),
                cached: Cached {
                    size: *size,
                    mtime_ns: *mtime_ns,
                    entry,
                },
            })
        })
        .collect();
    let header = Header {
        nib_version: env!("CARGO_PKG_VERSION"),
        root: root_key(root),
        files: records.len() as u64,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let result = (|| {
        let mut f = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(&tmp)?);
        f.write_all(MAGIC)?;
        f.write_all(&FORMAT.to_le_bytes())?;
        let mut buf = Vec::new();
        write_record(&mut f, &header, &mut buf)?;
        for rec in &records {
            write_record(&mut f, rec, &mut buf)?;
        }
        let f = f.into_inner().map_err(|e| e.into_error())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    } else if let Some(dir) = path.parent() {
        prune(dir, path);
    }
    result
}

/// Deletes the caches in `dir` other than `keep` whose workspace is gone (a deleted project, a
/// test's temporary directory). A file that is not a cache is left alone.
fn prune(dir: &Path, keep: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for p in entries.flatten().map(|e| e.path()) {
        if p == keep || p.extension().is_none_or(|e| e != "idx") {
            continue;
        }
        if workspace_of(&p).is_some_and(|root| !Path::new(&root).exists()) {
            let _ = std::fs::remove_file(&p);
        }
    }
}

/// The workspace a cache file belongs to (the header has not changed with the formats).
fn workspace_of(path: &Path) -> Option<String> {
    let (_, mut r) = open(path, 1 << 12).ok()?;
    let header: Header<String> = read_record(&mut r, &mut Vec::new()).ok()?;
    Some(header.root)
}
