//! Reusing embeddings from an earlier output of the stage instead of running the backbone again.
//!
//! Every output carries `embed.json` (what made its vectors: code version, backbone, the weights'
//! blake3, input size and fit) and a `poster` column naming the content behind each row. An
//! earlier output made the same way (`stage_shards::earlier`) is indexed by poster over all its
//! splits, so a movie that moved between splits (another split seed) is still found; anything
//! unreadable or of the wrong shape is treated as absent.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use stage_resize::Mode;
use stage_shards::earlier::{EarlierOutput, ShardRows};
use stage_shards::embedding::{EmbeddingMeta, read_embedding_shard};

/// `embed.json`: what shaped the vectors of an output. Rows are reused only between outputs
/// whose stamps are equal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReuseStamp {
    /// The stage's code version.
    pub version: u32,
    /// The network.
    pub backbone: String,
    /// blake3 of the weights file.
    pub weights: String,
    /// Input width.
    pub width: u32,
    /// Input height.
    pub height: u32,
    /// How posters were fitted.
    pub mode: Mode,
    /// Whether features are averaged with the mirror image's (absent in stamps before `flip`).
    #[serde(default)]
    pub flip: bool,
    /// The network whose features follow the first's, if any, and the blake3 of its weights.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub second_backbone: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub second_weights: Option<String>,
}

/// File name of the stamp in an output directory.
pub const STAMP_FILE: &str = "embed.json";

/// How `embed` reads an earlier shard: its vectors, sized by the `meta.json` beside it.
#[derive(Clone)]
struct VectorRows;

impl ShardRows for VectorRows {
    /// Values per vector, and the vectors.
    type Rows = (usize, Vec<f32>);
    fn load(&self, path: &Path) -> Option<(usize, Vec<f32>)> {
        let meta = EmbeddingMeta::load(path.parent()?).ok()?;
        let rows = read_embedding_shard(path, meta.dim, meta.genres.len()).ok()?;
        Some((meta.dim, rows.embeddings))
    }
}

/// The vectors of one earlier output, found by poster over all its splits.
pub struct EarlierEmbeddings {
    output: EarlierOutput<VectorRows>,
}

impl EarlierEmbeddings {
    /// The first of `dirs` made with `stamp` whose shards can be indexed, if any.
    pub fn open(dirs: &[PathBuf], stamp: &ReuseStamp, splits: &[&str]) -> Option<Self> {
        let shards = |dir: &Path| -> Result<Vec<(PathBuf, usize)>, String> {
            let mut found = Vec::new();
            for split in splits {
                let split_dir = dir.join(split);
                let meta = EmbeddingMeta::load(&split_dir).map_err(|e| e.to_string())?;
                found.extend(
                    meta.shards
                        .iter()
                        .map(|shard| (split_dir.join(&shard.file), shard.rows)),
                );
            }
            Ok(found)
        };
        EarlierOutput::open(dirs, STAMP_FILE, stamp, shards, VectorRows)
            .map(|output| Self { output })
    }

    /// The vectors of those `posters` this output has, as (position in `posters`, vector);
    /// shards are visited in order, each read once.
    pub fn lookup(&mut self, posters: &[String]) -> Vec<(usize, Vec<f32>)> {
        let mut found: Vec<((usize, usize), usize)> = posters
            .iter()
            .enumerate()
            .filter_map(|(r, p)| self.output.find(p).map(|at| (at, r)))
            .collect();
        found.sort_unstable();
        found
            .into_iter()
            .filter_map(|((shard, row), r)| {
                let (dim, values) = self.output.rows(shard)?;
                values
                    .get(row * dim..(row + 1) * dim)
                    .map(|v| (r, v.to_vec()))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use stage_shards::ShardFile;
    use stage_shards::embedding::{EMBEDDING_LAYOUT, EmbeddingShard, write_embedding_shard};

    fn stamp(width: u32) -> ReuseStamp {
        ReuseStamp {
            version: 1,
            backbone: "efficientnet-lite0".into(),
            weights: "abc".into(),
            width,
            height: 64,
            mode: Mode::Stretch,
            flip: false,
            second_backbone: None,
            second_weights: None,
        }
    }

    /// An output with posters `p/<n>` whose 2-value vectors are `[n, n]`, one split per entry.
    fn earlier_output(dir: &Path, stamp: &ReuseStamp, splits: &[(&str, &[u8])]) {
        for (split, posters) in splits {
            let split_dir = dir.join(split);
            std::fs::create_dir_all(&split_dir).unwrap();
            let shard = EmbeddingShard {
                ids: posters.iter().map(|&p| p as i64).collect(),
                posters: posters.iter().map(|p| format!("p/{p}")).collect(),
                embeddings: posters.iter().flat_map(|&p| [p as f32; 2]).collect(),
                labels: vec![1; posters.len()],
            };
            write_embedding_shard(&split_dir.join("s.parquet"), &shard, 2, 1).unwrap();
            EmbeddingMeta {
                layout: EMBEDDING_LAYOUT.into(),
                dim: 2,
                backbone: "efficientnet-lite0".into(),
                input_width: stamp.width as usize,
                input_height: 64,
                genres: vec!["Drama".into()],
                shards: vec![ShardFile {
                    file: "s.parquet".into(),
                    rows: posters.len(),
                }],
                preparation: None,
            }
            .save(&split_dir)
            .unwrap();
        }
        std::fs::write(dir.join(STAMP_FILE), serde_json::to_vec(stamp).unwrap()).unwrap();
    }

    #[test]
    fn vectors_are_found_by_poster_across_splits_in_outputs_made_the_same_way() {
        let other = tempfile::tempdir().unwrap();
        let same = tempfile::tempdir().unwrap();
        earlier_output(
            other.path(),
            &stamp(32),
            &[("train", &[1, 2]), ("test", &[3])],
        );
        earlier_output(
            same.path(),
            &stamp(64),
            &[("train", &[1, 2]), ("test", &[3])],
        );
        let dirs = [other.path().to_path_buf(), same.path().to_path_buf()];
        let splits = ["train", "test"];
        let mut earlier = EarlierEmbeddings::open(&dirs, &stamp(64), &splits).unwrap();
        let posters: Vec<String> = ["p/3", "p/9", "p/1"].map(String::from).to_vec();
        assert_eq!(
            earlier.lookup(&posters),
            vec![(2, vec![1.0, 1.0]), (0, vec![3.0, 3.0])]
        );
        assert!(EarlierEmbeddings::open(&dirs[..1], &stamp(64), &splits).is_none());
    }

    #[test]
    fn an_unreadable_shard_is_a_miss() {
        let dir = tempfile::tempdir().unwrap();
        earlier_output(dir.path(), &stamp(64), &[("train", &[1, 2])]);
        let dirs = [dir.path().to_path_buf()];
        let mut earlier = EarlierEmbeddings::open(&dirs, &stamp(64), &["train"]).unwrap();
        std::fs::write(dir.path().join("train/s.parquet"), b"junk").unwrap();
        assert!(earlier.lookup(&["p/1".to_string()]).is_empty());
    }
}
