//! Reusing resized posters from an earlier output of the stage instead of decoding them again.
//!
//! Every output carries `resize.json` (how its pixels were made) and a `poster` column naming the
//! poster file, and so the content, behind each row. An earlier output made the same way is indexed
//! by poster; its shards are read one at a time, only when a row is wanted. Anything unreadable or
//! of the wrong shape is treated as absent: the poster is decoded instead.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use polars::prelude::*;
use serde::{Deserialize, Serialize};
use stage_shards::ShardMeta;

use crate::{Mode, ResizeParams};

/// `resize.json`: what shaped the pixels of an output. Rows are reused only between outputs whose
/// stamps are equal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReuseStamp {
    /// The stage's code version.
    pub version: u32,
    /// Output width.
    pub width: u32,
    /// Output height.
    pub height: u32,
    /// Resize mode.
    pub mode: Mode,
}

impl ReuseStamp {
    /// The stamp of a run with `params` at code `version`.
    pub fn new(version: u32, params: &ResizeParams) -> Self {
        Self {
            version,
            width: params.width,
            height: params.height,
            mode: params.mode,
        }
    }
}

/// File name of the stamp in an output directory.
pub const STAMP_FILE: &str = "resize.json";

/// The rows of one earlier output, found by poster.
pub struct EarlierRows {
    dir: PathBuf,
    shard_files: Vec<String>,
    /// Poster file -> (shard, row).
    index: HashMap<String, (usize, usize)>,
    pixels: usize,
    /// The one shard whose images are in memory (bounded: one shard at a time).
    loaded: Option<(usize, BinaryChunked)>,
}

impl EarlierRows {
    /// The first of `dirs` made with `stamp` whose shards can be indexed, if any.
    pub fn open(dirs: &[PathBuf], stamp: &ReuseStamp) -> Option<Self> {
        dirs.iter().find_map(|dir| Self::open_one(dir, stamp).ok())
    }

    fn open_one(dir: &Path, stamp: &ReuseStamp) -> Result<Self, String> {
        let bytes = std::fs::read(dir.join(STAMP_FILE)).map_err(|e| e.to_string())?;
        let theirs: ReuseStamp = serde_json::from_slice(&bytes).map_err(|e| e.to_string())?;
        if &theirs != stamp {
            return Err("made another way".into());
        }
        let meta = ShardMeta::load(dir).map_err(|e| e.to_string())?;
        let mut index = HashMap::new();
        let mut shard_files = Vec::new();
        for (s, shard) in meta.shards.iter().enumerate() {
            let df = read_columns(&dir.join(&shard.file), "poster")?;
            let posters = df
                .column("poster")
                .and_then(|c| c.str())
                .map_err(|e| e.to_string())?;
            if posters.len() != shard.rows {
                return Err(format!("`{}` has another row count", shard.file));
            }
            for (row, poster) in posters.iter().enumerate() {
                if let Some(poster) = poster {
                    index.insert(poster.to_string(), (s, row));
                }
            }
            shard_files.push(shard.file.clone());
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            shard_files,
            index,
            pixels: meta.pixels(),
            loaded: None,
        })
    }

    /// Where the rows of `poster` are, if this output has them.
    pub fn find(&self, poster: &str) -> Option<(usize, usize)> {
        self.index.get(poster).copied()
    }

    /// Copies the pixels at `(shard, row)` into `dst`; `false` when they cannot be read.
    pub fn copy_into(&mut self, (shard, row): (usize, usize), dst: &mut [u8]) -> bool {
        if self.loaded.as_ref().map(|(s, _)| *s) != Some(shard) {
            // Drop the old shard before reading the next: one in memory at a time.
            self.loaded = None;
            let path = self.dir.join(&self.shard_files[shard]);
            let Ok(df) = read_columns(&path, "image") else {
                return false;
            };
            let Ok(images) = df.column("image").and_then(|c| c.binary()).cloned() else {
                return false;
            };
            self.loaded = Some((shard, images));
        }
        let Some((_, images)) = &self.loaded else {
            return false;
        };
        match images.get(row) {
            Some(pixels) if pixels.len() == self.pixels && pixels.len() == dst.len() => {
                dst.copy_from_slice(pixels);
                true
            }
            _ => false,
        }
    }
}

fn read_columns(path: &Path, column: &str) -> Result<DataFrame, String> {
    let file = File::open(path).map_err(|e| format!("`{}`: {e}", path.display()))?;
    ParquetReader::new(file)
        .with_columns(Some(vec![column.to_string()]))
        .finish()
        .map_err(|e| format!("`{}`: {e}", path.display()))
}
