//! Reusing per-poster rows of a stage's earlier output (`StageContext::earlier_outputs`) instead of
//! computing them again: `resize` takes pixels, `embed` vectors.
//!
//! An earlier output is taken only when its stamp file (how its rows were made) equals this run's;
//! its shards are indexed by their `poster` column (the poster file, and so the content, behind
//! each row) and read one at a time, only when a row is wanted. Anything unreadable, missing or of
//! the wrong shape is treated as absent: the stage computes the row instead.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

use crate::read_columns;

/// How a stage reads the rows of one of its shards.
pub trait ShardRows {
    /// A shard's rows in memory (one shard at a time).
    type Rows;
    /// Reads the shard at `path`; `None` when it cannot be read.
    fn load(&self, path: &Path) -> Option<Self::Rows>;
}

/// The rows of one earlier output, found by poster.
pub struct EarlierOutput<R: ShardRows> {
    /// The output folder.
    dir: PathBuf,
    /// Shard files, in the order the index numbers them.
    shards: Vec<PathBuf>,
    /// Poster file -> (shard, row).
    index: HashMap<String, (usize, usize)>,
    /// The one shard in memory.
    loaded: Option<(usize, R::Rows)>,
    reader: R,
}

impl<R: ShardRows> EarlierOutput<R> {
    /// The rows of every one of `dirs` whose `stamp_file` equals `stamp` and whose shards can be
    /// indexed, as one output: a poster is found in the first (newest) that has it. Several
    /// outputs matter when a fanned-out stage's shards (each with its own items) are offered
    /// together. `shards(dir)` lists an output's shard files with their row counts, or fails.
    pub fn open<S, L>(
        dirs: &[PathBuf],
        stamp_file: &str,
        stamp: &S,
        shards: L,
        reader: R,
    ) -> Option<Self>
    where
        S: DeserializeOwned + PartialEq,
        L: Fn(&Path) -> Result<Vec<(PathBuf, usize)>, String>,
        R: Clone,
    {
        let mut opened = dirs
            .iter()
            .filter_map(|dir| Self::open_one(dir, stamp_file, stamp, &shards, reader.clone()).ok());
        let mut merged = opened.next()?;
        for other in opened {
            let offset = merged.shards.len();
            merged.shards.extend(other.shards);
            for (poster, (shard, row)) in other.index {
                merged.index.entry(poster).or_insert((shard + offset, row));
            }
        }
        Some(merged)
    }

    fn open_one<S, L>(
        dir: &Path,
        stamp_file: &str,
        stamp: &S,
        shards: &L,
        reader: R,
    ) -> Result<Self, String>
    where
        S: DeserializeOwned + PartialEq,
        L: Fn(&Path) -> Result<Vec<(PathBuf, usize)>, String>,
    {
        let bytes = std::fs::read(dir.join(stamp_file)).map_err(|e| e.to_string())?;
        let theirs: S = serde_json::from_slice(&bytes).map_err(|e| e.to_string())?;
        if &theirs != stamp {
            return Err("made another way".into());
        }
        let mut files = Vec::new();
        let mut index = HashMap::new();
        for (path, rows) in shards(dir)? {
            let df = read_columns(&path, &["poster"]).map_err(|e| e.to_string())?;
            let posters = df
                .column("poster")
                .and_then(|c| c.str())
                .map_err(|e| e.to_string())?;
            if posters.len() != rows {
                return Err(format!("`{}` has another row count", path.display()));
            }
            for (row, poster) in posters.iter().enumerate() {
                if let Some(poster) = poster {
                    index.insert(poster.to_string(), (files.len(), row));
                }
            }
            files.push(path);
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            shards: files,
            index,
            loaded: None,
            reader,
        })
    }

    /// The output folder it reads (the first, when it merges several).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where the row of `poster` is, if this output has it.
    pub fn find(&self, poster: &str) -> Option<(usize, usize)> {
        self.index.get(poster).copied()
    }

    /// The rows of `shard`, read unless they are the ones in memory (the shard before is dropped
    /// first: one in memory at a time).
    pub fn rows(&mut self, shard: usize) -> Option<&R::Rows> {
        if self.loaded.as_ref().map(|(s, _)| *s) != Some(shard) {
            self.loaded = None;
            let rows = self.reader.load(self.shards.get(shard)?)?;
            self.loaded = Some((shard, rows));
        }
        self.loaded.as_ref().map(|(_, rows)| rows)
    }
}
