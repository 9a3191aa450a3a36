//! `stats`: per-split dataset statistics (genre balance, labels per movie, pixel mean and std).
//!
//! Cheap next to training and independent of it, it is the default pipeline's second branch.

use std::path::Path;

use pipeline_api::{Kind, KindInfo, RunSummary, StageContext, StageError, write_json};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use stage_shards::{ShardMeta, read_shard};

/// The stats stage kind.
pub struct Stats;

/// The splits a `split` stage writes, in order.
const SPLITS: [&str; 3] = ["train", "val", "test"];

/// `stats` takes no params; the struct exists so a typo under `params:` is an error.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StatsParams {}

/// What `stats.json` holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DatasetStats {
    /// Poster width in pixels.
    pub width: usize,
    /// Poster height in pixels.
    pub height: usize,
    /// Channels per pixel.
    pub channels: usize,
    /// Genre vocabulary in label order.
    pub genres: Vec<String>,
    /// Per split, in `train`, `val`, `test` order.
    pub splits: Vec<SplitStats>,
}

/// Statistics of one split.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SplitStats {
    /// `train`, `val` or `test`.
    pub split: String,
    /// Movies in the split.
    pub movies: usize,
    /// Movies carrying each genre, in vocabulary order.
    pub genre_counts: Vec<u64>,
    /// Mean number of genres per movie (0 when the split is empty).
    pub labels_per_movie: f64,
    /// Mean of each channel on the 0–1 scale.
    pub pixel_mean: Vec<f64>,
    /// Standard deviation of each channel on the 0–1 scale.
    pub pixel_std: Vec<f64>,
}

impl DatasetStats {
    /// Reads `stats.json` from a `stats` stage output.
    pub fn load(dir: &Path) -> Result<Self, StageError> {
        pipeline_api::read_json(&dir.join("stats.json"))
    }
}

/// Sums over some rows, merged across shards.
#[derive(Clone)]
struct Sums {
    movies: usize,
    genre_counts: Vec<u64>,
    channel_sum: Vec<f64>,
    channel_sq: Vec<f64>,
}

impl Sums {
    fn new(genres: usize, channels: usize) -> Self {
        Self {
            movies: 0,
            genre_counts: vec![0; genres],
            channel_sum: vec![0.0; channels],
            channel_sq: vec![0.0; channels],
        }
    }

    fn merge(mut self, other: Sums) -> Sums {
        self.movies += other.movies;
        for (a, b) in self.genre_counts.iter_mut().zip(other.genre_counts) {
            *a += b;
        }
        for (a, b) in self.channel_sum.iter_mut().zip(other.channel_sum) {
            *a += b;
        }
        for (a, b) in self.channel_sq.iter_mut().zip(other.channel_sq) {
            *a += b;
        }
        self
    }
}

fn split_stats(split: &str, meta: &ShardMeta, dir: &Path) -> Result<SplitStats, StageError> {
    let (genres, channels) = (meta.genres.len(), meta.channels.max(1));
    let per_shard: Vec<Sums> = meta
        .paths(dir)
        .par_iter()
        .map(|path| {
            let shard = read_shard(path, meta.pixels(), genres)?;
            let mut sums = Sums::new(genres, channels);
            sums.movies = shard.len();
            for row in shard.labels.chunks_exact(genres.max(1)) {
                for (count, &label) in sums.genre_counts.iter_mut().zip(row) {
                    *count += u64::from(label);
                }
            }
            // Integer sums per channel are exact; the floats come at the end.
            let mut sum = vec![0u64; channels];
            let mut sq = vec![0u64; channels];
            for pixel in shard.images.chunks_exact(channels) {
                for (c, &v) in pixel.iter().enumerate() {
                    sum[c] += u64::from(v);
                    sq[c] += u64::from(v) * u64::from(v);
                }
            }
            for c in 0..channels {
                sums.channel_sum[c] = sum[c] as f64;
                sums.channel_sq[c] = sq[c] as f64;
            }
            Ok(sums)
        })
        .collect::<Result<_, StageError>>()?;
    let total = per_shard
        .into_iter()
        .fold(Sums::new(genres, channels), Sums::merge);
    let values = (total.movies * meta.width * meta.height) as f64;
    let (mut mean, mut std) = (vec![0.0; channels], vec![0.0; channels]);
    if values > 0.0 {
        for c in 0..channels {
            let m = total.channel_sum[c] / values;
            let variance = (total.channel_sq[c] / values - m * m).max(0.0);
            mean[c] = m / 255.0;
            std[c] = variance.sqrt() / 255.0;
        }
    }
    let labels: u64 = total.genre_counts.iter().sum();
    Ok(SplitStats {
        split: split.to_string(),
        movies: total.movies,
        labels_per_movie: if total.movies == 0 {
            0.0
        } else {
            labels as f64 / total.movies as f64
        },
        genre_counts: total.genre_counts,
        pixel_mean: mean,
        pixel_std: std,
    })
}

impl Kind for Stats {
    type Params = StatsParams;
    const INFO: KindInfo = KindInfo {
        inputs: &["data"],
        input_kinds: &[("data", &["split"])],
        ..KindInfo::new(
            "stats",
            1,
            "per-split dataset statistics: genre balance, labels per movie, pixel mean and std",
            pipeline_api::locked_dependencies!(),
        )
    };
    fn run(&self, ctx: &StageContext<'_>, _params: StatsParams) -> Result<RunSummary, StageError> {
        let data = ctx.input("data")?;
        ctx.progress.start("stats", SPLITS.len() as u64);
        let mut splits = Vec::new();
        let mut shape = None;
        for split in SPLITS {
            let dir = data.join(split);
            let meta = ShardMeta::load(&dir)?;
            splits.push(split_stats(split, &meta, &dir)?);
            shape.get_or_insert(meta);
            ctx.progress.advance(1);
        }
        let meta = shape.expect("three splits");
        let stats = DatasetStats {
            width: meta.width,
            height: meta.height,
            channels: meta.channels,
            genres: meta.genres,
            splits,
        };
        write_json(&ctx.out_dir.join("stats.json"), &stats)?;
        let train = &stats.splits[0];
        let mean: Vec<String> = train.pixel_mean.iter().map(|m| format!("{m:.3}")).collect();
        Ok(RunSummary::new([format!(
            "{} genres; train {} movies, {:.2} genres per movie, pixel mean [{}]",
            stats.genres.len(),
            train.movies,
            train.labels_per_movie,
            mean.join(", ")
        )]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use stage_shards::{Shard, ShardFile, write_shard};

    #[test]
    fn counts_and_moments_match_a_hand_computed_shard() {
        let dir = tempfile::tempdir().unwrap();
        let split_dir = dir.path().join("train");
        std::fs::create_dir_all(&split_dir).unwrap();
        // Two 1x2 RGB posters: channel 0 is 0 and 255, channel 1 is 51 everywhere, channel 2 is 102.
        let shard = Shard {
            ids: vec![1, 2],
            posters: vec!["posters/a".into(), "posters/b".into()],
            images: vec![0, 51, 102, 0, 51, 102, 255, 51, 102, 255, 51, 102],
            labels: vec![1, 0, 1, 1, 0, 0],
        };
        write_shard(&split_dir.join("shard-00000.parquet"), &shard, 6, 3).unwrap();
        let meta = ShardMeta {
            width: 2,
            height: 1,
            channels: 3,
            layout: "HWC".into(),
            genres: vec!["Action".into(), "Comedy".into(), "Drama".into()],
            shards: vec![ShardFile {
                file: "shard-00000.parquet".into(),
                rows: 2,
            }],
            mode: None,
        };
        let stats = split_stats("train", &meta, &split_dir).unwrap();
        assert_eq!(stats.movies, 2);
        assert_eq!(stats.genre_counts, [2, 0, 1]);
        assert!((stats.labels_per_movie - 1.5).abs() < 1e-9);
        assert!((stats.pixel_mean[0] - 0.5).abs() < 1e-9);
        assert!((stats.pixel_std[0] - 0.5).abs() < 1e-9);
        assert!((stats.pixel_mean[1] - 0.2).abs() < 1e-9);
        assert!(stats.pixel_std[1].abs() < 1e-9);
        assert!((stats.pixel_mean[2] - 0.4).abs() < 1e-9);
    }
}
