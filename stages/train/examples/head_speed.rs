//! How long `train` takes to fit a head on embeddings at the real dataset's size, through the
//! stage's own `run` (reading Parquet shards, standardising, fitting, choosing the decision rule).
//!
//! `target/release/examples/head_speed [rows] [genres] [params as JSON]` after
//! `cargo build --release --workspace --all-targets` (defaults: 16,152 training rows as in the
//! team's 22,919-poster set, 22 genres, the default pipeline's head params; the JSON overrides them).
//! The embeddings are synthetic: each genre shifts a few of the 1,280 dimensions, plus noise.

#![allow(clippy::print_stdout)] // a command-line tool: stdout is its output

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use pipeline_api::{NoItems, NoProgress, Stage, StageContext};
use stage_shards::ShardFile;
use stage_shards::embedding::{
    EMBEDDING_LAYOUT, EmbeddingMeta, EmbeddingShard, write_embedding_shard,
};
use stage_train::Train;

const DIM: usize = 1280;

fn split(dir: &Path, rows: usize, genres: usize, seed: u64) {
    std::fs::create_dir_all(dir).unwrap();
    let mut state = seed;
    let mut next = move || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 33) as f32 / (1u64 << 31) as f32
    };
    let mut shard = EmbeddingShard::default();
    for r in 0..rows {
        let labels: Vec<u8> = (0..genres)
            .map(|g| u8::from(next() < 0.6 / (g + 1) as f32))
            .collect();
        shard.ids.push(r as i64);
        shard.posters.push(format!("posters/{seed}-{r}"));
        for d in 0..DIM {
            let signal: f32 = (0..genres)
                .filter(|&g| labels[g] == 1 && d % 64 == g)
                .map(|_| 0.25)
                .sum();
            shard.embeddings.push(signal + next() * 2.0);
        }
        shard.labels.extend(labels);
    }
    write_embedding_shard(&dir.join("shard-00000.parquet"), &shard, DIM, genres).unwrap();
    EmbeddingMeta {
        layout: EMBEDDING_LAYOUT.into(),
        dim: DIM,
        backbone: "synthetic".into(),
        input_width: 128,
        input_height: 192,
        genres: (0..genres).map(|g| format!("genre{g}")).collect(),
        shards: vec![ShardFile {
            file: "shard-00000.parquet".into(),
            rows,
        }],
        preparation: None,
    }
    .save(dir)
    .unwrap();
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let rows: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(16_152);
    let genres: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(22);
    let overrides: serde_json::Value = args
        .get(3)
        .map(|a| serde_json::from_str(a).expect("params as JSON"))
        .unwrap_or_else(|| serde_json::json!({}));
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    split(&data.join("train"), rows, genres, 1);
    split(&data.join("val"), rows * 3368 / 16152, genres, 2);
    let out = work.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    // The default pipeline's head params.
    let mut raw = serde_json::json!({
        "architecture": "mlp", "hidden": 512, "dropout": 0.3, "epochs": 60,
        "batch_size": 64, "learning_rate": 0.001, "optimizer": "adamw",
        "weight_decay": 0.0001, "early_stopping": {"monitor": "val-loss", "patience": 8},
    });
    for (key, value) in overrides.as_object().expect("a JSON object") {
        raw[key] = value.clone();
    }
    let params = Train.canonical_params(&raw).unwrap();
    let architecture = params["architecture"].as_str().unwrap().to_string();
    let inputs: BTreeMap<String, PathBuf> = [("data".to_string(), data)].into();
    let files = BTreeMap::new();
    let work = tempfile::tempdir().unwrap();
    let ctx = StageContext {
        name: "train",
        params: &params,
        inputs: &inputs,
        files: &files,
        out_dir: &out,
        threads: std::thread::available_parallelism().map_or(2, |n| n.get()),
        progress: &NoProgress,
        items: &NoItems,
        retry_failed: false,
        earlier_outputs: &[],
        work_dir: work.path(),
        shard: None,
    };
    let started = Instant::now();
    let summary = Train.run(&ctx).unwrap();
    let seconds = started.elapsed().as_secs_f64();
    let history: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("history.json")).unwrap()).unwrap();
    let epochs = history["epochs"].as_array().unwrap().len();
    println!(
        "{architecture} head (hidden {}, batch {}), {rows} training rows x {DIM}, {genres} genres: {seconds:.1} s for the stage, {epochs} epochs, {:.2} s per epoch",
        params["hidden"],
        params["batch_size"],
        history["seconds"].as_f64().unwrap() / epochs as f64
    );
    for line in summary.lines {
        println!("  {line}");
    }
}
