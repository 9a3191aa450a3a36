//! `split`: deterministic train/val/test split by a seeded hash of each `imdbId`.
//!
//! A movie's split depends only on its id and the seed, never on which other movies exist, so
//! adding movies never moves an existing one to another split.

use std::path::Path;

use pipeline_api::{
    Kind, KindInfo, ParamError, RunSummary, StageContext, StageError, create_dir, write_json,
};
use serde::{Deserialize, Serialize};
use stage_shards::{Shard, ShardFile, ShardMeta, read_shard, write_shard};

/// The split stage kind.
pub struct Split;

/// The three splits, in output order.
pub const SPLITS: [&str; 3] = ["train", "val", "test"];

/// Params of `split`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SplitParams {
    /// Seed of the hash; changing it reshuffles every movie.
    pub seed: u64,
    /// Fraction of movies in `val`.
    pub val_fraction: f64,
    /// Fraction of movies in `test`.
    pub test_fraction: f64,
}

impl Default for SplitParams {
    fn default() -> Self {
        Self {
            seed: 42,
            val_fraction: 0.15,
            test_fraction: 0.15,
        }
    }
}

/// Which split a movie belongs to: 0 train, 1 val, 2 test.
pub fn assign(id: i64, params: &SplitParams) -> usize {
    let mut hasher = blake3::Hasher::new();
    hasher.update(&params.seed.to_le_bytes());
    hasher.update(&id.to_le_bytes());
    let bytes: [u8; 8] = hasher.finalize().as_bytes()[..8]
        .try_into()
        .expect("8 bytes");
    let u = u64::from_le_bytes(bytes) as f64 / (u64::MAX as f64 + 1.0);
    if u < params.test_fraction {
        2
    } else if u < params.test_fraction + params.val_fraction {
        1
    } else {
        0
    }
}

impl Kind for Split {
    type Params = SplitParams;
    const INFO: KindInfo = KindInfo {
        inputs: &["shards"],
        input_kinds: &[("shards", &["resize"])],
        ..KindInfo::new(
            "split",
            1,
            "split shards into train/val/test by a seeded hash of imdbId",
            pipeline_api::locked_dependencies!(),
        )
    };
    fn check(p: &SplitParams) -> Result<(), ParamError> {
        for (path, value) in [
            ("val_fraction", p.val_fraction),
            ("test_fraction", p.test_fraction),
        ] {
            if !(0.0..1.0).contains(&value) {
                return Err(ParamError::at(
                    path,
                    format!("must be in [0, 1), got {value}"),
                ));
            }
        }
        if p.val_fraction + p.test_fraction >= 1.0 {
            return Err(ParamError::at(
                "test_fraction",
                "val_fraction + test_fraction must leave some movies for training",
            ));
        }
        Ok(())
    }
    fn run(&self, ctx: &StageContext<'_>, params: SplitParams) -> Result<RunSummary, StageError> {
        let input = ctx.input("shards")?;
        let meta = ShardMeta::load(input)?;
        let (pixels, genres) = (meta.pixels(), meta.genres.len());
        let mut metas: Vec<ShardMeta> = SPLITS
            .iter()
            .map(|_| ShardMeta {
                shards: Vec::new(),
                ..meta.clone()
            })
            .collect();
        for split in SPLITS {
            create_dir(&ctx.out_dir.join(split))?;
        }
        ctx.progress.start("split", meta.shards.len() as u64);
        for (n, path) in meta.paths(input).iter().enumerate() {
            let shard = read_shard(path, pixels, genres)?;
            let mut parts = [Shard::default(), Shard::default(), Shard::default()];
            for i in 0..shard.len() {
                parts[assign(shard.ids[i], &params)].push_row(&shard, i, pixels, genres);
            }
            for ((split, part), split_meta) in SPLITS.iter().zip(&parts).zip(&mut metas) {
                let file = format!("shard-{n:05}.parquet");
                write_shard(&ctx.out_dir.join(split).join(&file), part, pixels, genres)?;
                split_meta.shards.push(ShardFile {
                    file,
                    rows: part.len(),
                });
            }
            ctx.progress.advance(1);
        }
        for (split, split_meta) in SPLITS.iter().zip(&metas) {
            split_meta.save(&ctx.out_dir.join(split))?;
        }
        let counts: Vec<usize> = metas.iter().map(ShardMeta::rows).collect();
        write_json(
            &ctx.out_dir.join("summary.json"),
            &serde_json::json!({"train": counts[0], "val": counts[1], "test": counts[2]}),
        )?;
        Ok(RunSummary::new([format!(
            "train {}, val {}, test {}",
            counts[0], counts[1], counts[2]
        )]))
    }
}

/// The shard metadata of one split below a `split` stage output.
pub fn split_meta(
    split_output: &Path,
    split: &str,
) -> Result<(ShardMeta, std::path::PathBuf), StageError> {
    let dir = split_output.join(split);
    Ok((ShardMeta::load(&dir)?, dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assignment_is_stable_and_roughly_proportional() {
        let params = SplitParams::default();
        let mut counts = [0usize; 3];
        for id in 0..10_000 {
            let split = assign(id, &params);
            assert_eq!(split, assign(id, &params));
            counts[split] += 1;
        }
        assert!((6500..7500).contains(&counts[0]), "{counts:?}");
        assert!((1200..1800).contains(&counts[1]), "{counts:?}");
        assert!((1200..1800).contains(&counts[2]), "{counts:?}");
    }

    #[test]
    fn seed_changes_the_assignment() {
        let a = SplitParams::default();
        let b = SplitParams {
            seed: 7,
            ..SplitParams::default()
        };
        assert!((0..100).any(|id| assign(id, &a) != assign(id, &b)));
    }
}
