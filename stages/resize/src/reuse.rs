//! Reusing resized posters from an earlier output of the stage instead of decoding them again.
//!
//! Every output carries `resize.json` (how its pixels were made); `stage_shards::earlier` finds an
//! earlier output made the same way and its rows by poster. Anything unreadable or of the wrong
//! shape is treated as absent: the poster is decoded instead.

use std::path::{Path, PathBuf};

use polars::prelude::*;
use serde::{Deserialize, Serialize};
use stage_shards::earlier::{EarlierOutput, ShardRows};
use stage_shards::{ShardMeta, read_columns};

use crate::params::{Mode, ResizeParams};

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

/// How `resize` reads an earlier shard: its `image` column.
#[derive(Clone)]
struct ImageRows;

impl ShardRows for ImageRows {
    type Rows = BinaryChunked;
    fn load(&self, path: &Path) -> Option<BinaryChunked> {
        let df = read_columns(path, &["image"]).ok()?;
        df.column("image").and_then(|c| c.binary()).cloned().ok()
    }
}

/// The pixels of one earlier output, found by poster.
pub struct EarlierRows {
    output: EarlierOutput<ImageRows>,
    /// u8 values per image (equal stamps: equal sizes).
    pixels: usize,
}

impl EarlierRows {
    /// The first of `dirs` made with `stamp` whose shards can be indexed, if any.
    pub fn open(dirs: &[PathBuf], stamp: &ReuseStamp) -> Option<Self> {
        let shards = |dir: &Path| -> Result<Vec<(PathBuf, usize)>, String> {
            let meta = ShardMeta::load(dir).map_err(|e| e.to_string())?;
            Ok(meta
                .shards
                .iter()
                .map(|shard| (dir.join(&shard.file), shard.rows))
                .collect())
        };
        let output = EarlierOutput::open(dirs, STAMP_FILE, stamp, shards, ImageRows)?;
        Some(Self {
            output,
            pixels: stamp.width as usize * stamp.height as usize * 3,
        })
    }

    /// Where the pixels of `poster` are, if this output has them.
    pub fn find(&self, poster: &str) -> Option<(usize, usize)> {
        self.output.find(poster)
    }

    /// Copies the pixels at `(shard, row)` into `dst`; `false` when they cannot be read.
    pub fn copy_into(&mut self, (shard, row): (usize, usize), dst: &mut [u8]) -> bool {
        let pixels = self.pixels;
        match self.output.rows(shard).and_then(|images| images.get(row)) {
            Some(image) if image.len() == pixels && image.len() == dst.len() => {
                dst.copy_from_slice(image);
                true
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use stage_shards::{Shard, ShardFile, write_shard};

    fn params(width: u32) -> ResizeParams {
        ResizeParams {
            width,
            height: 1,
            mode: Mode::Stretch,
            shard_rows: 2,
        }
    }

    /// An output of two shards of 1x1 posters whose pixels are `[n, n, n]`.
    fn earlier_output(dir: &Path, stamp: &ReuseStamp) {
        let shard = |posters: [&str; 2], values: [u8; 2]| Shard {
            ids: vec![1, 2],
            posters: posters.iter().map(|p| p.to_string()).collect(),
            images: values.iter().flat_map(|&v| [v; 3]).collect(),
            labels: vec![1, 0],
        };
        write_shard(
            &dir.join("a.parquet"),
            &shard(["p/a", "p/b"], [10, 20]),
            3,
            1,
        )
        .unwrap();
        write_shard(
            &dir.join("b.parquet"),
            &shard(["p/c", "p/d"], [30, 40]),
            3,
            1,
        )
        .unwrap();
        ShardMeta {
            width: stamp.width as usize,
            height: 1,
            channels: 3,
            layout: "HWC".into(),
            genres: vec!["Drama".into()],
            shards: ["a.parquet", "b.parquet"]
                .map(|file| ShardFile {
                    file: file.into(),
                    rows: 2,
                })
                .to_vec(),
            mode: None,
        }
        .save(dir)
        .unwrap();
        std::fs::write(dir.join(STAMP_FILE), serde_json::to_vec(stamp).unwrap()).unwrap();
    }

    #[test]
    fn rows_are_found_by_poster_and_copied_from_the_first_output_made_the_same_way() {
        let other = tempfile::tempdir().unwrap();
        let same = tempfile::tempdir().unwrap();
        let stamp = ReuseStamp::new(7, &params(1));
        earlier_output(other.path(), &ReuseStamp::new(6, &params(1)));
        earlier_output(same.path(), &stamp);
        let dirs = [other.path().to_path_buf(), same.path().to_path_buf()];
        let mut rows = EarlierRows::open(&dirs, &stamp).expect("the second output matches");
        assert_eq!(rows.output.dir(), same.path());
        assert_eq!(rows.find("p/x"), None);
        let mut px = [0u8; 3];
        for (poster, value) in [("p/d", 40), ("p/a", 10), ("p/c", 30)] {
            assert!(rows.copy_into(rows.find(poster).unwrap(), &mut px));
            assert_eq!(px, [value; 3], "{poster}");
        }
        assert!(
            EarlierRows::open(&dirs[..1], &stamp).is_none(),
            "other code version"
        );
    }

    #[test]
    fn an_unreadable_shard_is_a_miss_not_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let stamp = ReuseStamp::new(7, &params(1));
        earlier_output(dir.path(), &stamp);
        let dirs = [dir.path().to_path_buf()];
        let mut rows = EarlierRows::open(&dirs, &stamp).unwrap();
        let len = std::fs::metadata(dir.path().join("b.parquet"))
            .unwrap()
            .len();
        std::fs::write(dir.path().join("b.parquet"), vec![0u8; len as usize]).unwrap();
        let mut px = [0u8; 3];
        assert!(!rows.copy_into(rows.find("p/c").unwrap(), &mut px));
        assert!(rows.copy_into(rows.find("p/a").unwrap(), &mut px));
        assert_eq!(px, [10; 3]);
        // And a destination of another size is never half-filled.
        let mut wrong = [0u8; 6];
        assert!(!rows.copy_into(rows.find("p/b").unwrap(), &mut wrong));
        assert_eq!(wrong, [0; 6]);
    }
}
