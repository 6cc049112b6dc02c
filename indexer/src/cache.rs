//! The index on disk, so that a restart is ready at once: one file per workspace in the user's
//! cache directory, holding each source file's entry keyed by its path, size and modification
//! time. A file whose size or time changed is parsed again; the rest comes from the cache.
//!
//! The file starts with a magic string, a format version and nib's version; anything else (an
//! older nib, a corrupt or truncated file, another workspace's) is discarded with a note and the
//! index is rebuilt, never trusted. Writes go to a temporary file that is then renamed over the
//! old one, so a crash mid-write leaves the previous cache intact.

use crate::index::{FileEntry, Index};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

const MAGIC: &[u8; 8] = b"NIBINDEX";
/// Bump when what the index extracts, or how it is stored, changes.
const FORMAT: u32 = 2;

/// One file as cached: the key (size, modification time) and what the parse gave. Written
/// with the entry borrowed from the index (`Cached<&FileEntry>`), read back owned.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Cached<E = FileEntry> {
    pub size: u64,
    pub mtime_ns: u128,
    pub entry: E,
}

/// The cache file after its magic and format: owned when read, borrowed when written.
#[derive(Debug, Serialize, Deserialize)]
struct Body<S: Ord, E> {
    nib_version: S,
    root: String,
    files: BTreeMap<S, Cached<E>>,
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

/// Reads the cache of `root` at `path`. `Err` says why it cannot be used (absent, another
/// version, corrupt, another root).
pub fn load(path: &Path, root: &Path) -> Result<HashMap<String, Cached>, String> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err("no cache yet".into()),
        Err(e) => return Err(format!("cannot read it: {e}")),
    };
    let rest = bytes
        .strip_prefix(MAGIC.as_slice())
        .ok_or("not an index cache")?;
    let (format, rest) = rest.split_at_checked(4).ok_or("truncated")?;
    let format = u32::from_le_bytes(format.try_into().unwrap_or_default());
    if format != FORMAT {
        return Err(format!("format {format}, this nib writes {FORMAT}"));
    }
    let body: Body<String, FileEntry> =
        postcard::from_bytes(rest).map_err(|e| format!("corrupt ({e})"))?;
    if body.nib_version != env!("CARGO_PKG_VERSION") {
        return Err(format!("written by nib {}", body.nib_version));
    }
    if body.root != root_key(root) {
        return Err(format!("it belongs to {}", body.root));
    }
    Ok(body.files.into_iter().collect())
}

/// Writes the entries of `index` for `keys` (path, size, modification time) atomically: a
/// temporary file beside the cache, then a rename.
pub fn save(
    path: &Path,
    root: &Path,
    index: &Index,
    keys: &[(String, u64, u128)],
) -> std::io::Result<()> {
    let files = keys
        .iter()
        .filter_map(|(rel, size, mtime_ns)| {
            let entry = index.files.get(rel)?;
            Some((
                rel.as_str(),
                Cached {
                    size: *size,
                    mtime_ns: *mtime_ns,
                    entry,
                },
            ))
        })
        .collect();
    let body = Body {
        nib_version: env!("CARGO_PKG_VERSION"),
        root: root_key(root),
        files,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let result = (|| {
        // Streamed: the encoded index (hundreds of MB on a large repository) is never in memory
        // at once.
        let mut f = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(&tmp)?);
        f.write_all(MAGIC)?;
        f.write_all(&FORMAT.to_le_bytes())?;
        postcard::to_io(&body, &mut f).map_err(std::io::Error::other)?;
        let f = f.into_inner().map_err(|e| e.into_error())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}
