//! Acceptance tracking, local only: suggestions shown, accepted (whole or in part, by characters)
//! and dismissed, and the characters the user typed, kept in one small JSON file in the user's
//! data directory. Nothing here ever leaves the machine.
//!
//! Several servers (one per editor window) share the file: each keeps only the counts it has
//! not written yet and adds them to the file under an exclusive lock ([`Stats::add_to_file`]),
//! so none loses another's counts; every write goes through a temporary file of its own.

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Stats {
    pub shown: u64,
    pub accepted: u64,
    pub accepted_partial: u64,
    pub dismissed: u64,
    /// Characters inserted by accepting suggestions.
    pub accepted_chars: u64,
    /// Characters the user typed (edits of a few characters at a time).
    pub typed_chars: u64,
}

impl Stats {
    /// Share of shown suggestions that were accepted, whole or in part.
    pub fn acceptance_rate(&self) -> f64 {
        if self.shown == 0 {
            0.0
        } else {
            (self.accepted + self.accepted_partial) as f64 / self.shown as f64
        }
    }

    /// Share of the code written that came from nib (CodeCompose's headline figure).
    pub fn share_from_nib(&self) -> f64 {
        let total = self.accepted_chars + self.typed_chars;
        if total == 0 {
            0.0
        } else {
            self.accepted_chars as f64 / total as f64
        }
    }

    pub fn report(&self) -> String {
        format!(
            "suggestions shown      {}\n\
             accepted               {} whole, {} in part ({:.1}%)\n\
             dismissed              {}\n\
             characters from nib    {}\n\
             characters typed       {}\n\
             share of code from nib {:.1}%\n",
            self.shown,
            self.accepted,
            self.accepted_partial,
            100.0 * self.acceptance_rate(),
            self.dismissed,
            self.accepted_chars,
            self.typed_chars,
            100.0 * self.share_from_nib(),
        )
    }

    /// `$NIB_STATS_FILE`, else `<data dir>/nib/stats.json`.
    pub fn default_path() -> PathBuf {
        if let Some(p) = std::env::var_os("NIB_STATS_FILE") {
            return PathBuf::from(p);
        }
        dirs::data_local_dir()
            .unwrap_or_else(std::env::temp_dir)
            .join("nib")
            .join("stats.json")
    }

    /// Reads the file; a missing one is empty stats, an unreadable one is an error.
    pub fn load(path: &Path) -> Result<Stats, String> {
        match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| format!("{} is not a nib stats file: {e}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Stats::default()),
            Err(e) => Err(format!("cannot read {}: {e}", path.display())),
        }
    }

    /// Writes the file atomically: a temporary file of this process and call, then a rename.
    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        static WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let n = WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tmp = path.with_extension(format!("json.{}.{n}.tmp", std::process::id()));
        let written = std::fs::write(&tmp, serde_json::to_vec_pretty(self).unwrap_or_default())
            .and_then(|()| std::fs::rename(&tmp, path));
        if written.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        written
    }

    /// Every count of `other` added to this one (saturating: a count never wraps).
    pub fn add(&mut self, other: &Stats) {
        self.shown = self.shown.saturating_add(other.shown);
        self.accepted = self.accepted.saturating_add(other.accepted);
        self.accepted_partial = self.accepted_partial.saturating_add(other.accepted_partial);
        self.dismissed = self.dismissed.saturating_add(other.dismissed);
        self.accepted_chars = self.accepted_chars.saturating_add(other.accepted_chars);
        self.typed_chars = self.typed_chars.saturating_add(other.typed_chars);
    }

    /// Adds `delta` to the counts in the file at `path`, holding an exclusive lock on a lock
    /// file beside it from the read to the rename, and returns the totals now in the file. A
    /// file that is not a stats file is an error (and stays as it is).
    pub fn add_to_file(delta: &Stats, path: &Path) -> Result<Stats, String> {
        let fail = |e: std::io::Error| format!("cannot write {}: {e}", path.display());
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(fail)?;
        }
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path.with_extension("json.lock"))
            .map_err(fail)?;
        lock.lock().map_err(fail)?;
        let mut total = Stats::load(path)?;
        total.add(delta);
        let saved = total.save(path).map_err(fail);
        let _ = lock.unlock();
        saved.map(|()| total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_and_round_trip() {
        let s = Stats {
            shown: 10,
            accepted: 3,
            accepted_partial: 1,
            dismissed: 6,
            accepted_chars: 120,
            typed_chars: 480,
        };
        assert!((s.acceptance_rate() - 0.4).abs() < 1e-9);
        assert!((s.share_from_nib() - 0.2).abs() < 1e-9);
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("d/stats.json");
        s.save(&p).unwrap();
        assert_eq!(Stats::load(&p).unwrap(), s);
        assert_eq!(
            Stats::load(&dir.path().join("none")).unwrap(),
            Stats::default()
        );
        std::fs::write(&p, "garbage").unwrap();
        assert!(Stats::load(&p).is_err());
        assert!(Stats::add_to_file(&s, &p).is_err());
        assert_eq!(std::fs::read(&p).unwrap(), b"garbage");
    }

    /// Threads adding at once, each through its own writes, lose nothing.
    #[test]
    fn concurrent_additions_lose_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("stats.json");
        std::thread::scope(|scope| {
            for _ in 0..4 {
                scope.spawn(|| {
                    for _ in 0..50 {
                        let one = Stats {
                            shown: 1,
                            typed_chars: 2,
                            ..Stats::default()
                        };
                        Stats::add_to_file(&one, &p).unwrap();
                    }
                });
            }
        });
        let total = Stats::load(&p).unwrap();
        assert_eq!((total.shown, total.typed_chars), (200, 400));
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
            .collect();
        assert!(left.is_empty(), "temporary files left: {left:?}");
    }
}
