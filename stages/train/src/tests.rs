//! Unit tests of the training loop on tiny synthetic data.

use super::*;
use pipeline_api::{NoItems, NoProgress};
use stage_backbone::EfficientNetLite0;

fn context(out_dir: &Path) -> StageContext<'_> {
    static EMPTY: std::sync::OnceLock<std::collections::BTreeMap<String, std::path::PathBuf>> =
        std::sync::OnceLock::new();
    let empty = EMPTY.get_or_init(Default::default);
    StageContext {
        name: "train",
        params: &serde_json::Value::Null,
        inputs: empty,
        files: empty,
        out_dir,
        threads: 2,
        progress: &NoProgress,
        items: &NoItems,
        retry_failed: false,
        earlier_outputs: &[],
    }
}

fn spec(architecture: Architecture, width: usize, height: usize) -> ModelSpec {
    ModelSpec {
        architecture,
        width,
        height,
        genres: vec!["red".into(), "blue".into()],
        hidden: 16,
        dropout: 0.1,
        embedding: None,
        decision: None,
    }
}

/// 64 posters, each one colour: red ones are genre 0, blue ones genre 1.
fn colour_posters(w: usize, h: usize) -> Shard {
    let mut data = Shard::default();
    for i in 0..64 {
        let red = i % 2 == 0;
        data.ids.push(i);
        data.posters.push(format!("posters/{i}"));
        let px = if red { [220, 30, 30] } else { [30, 30, 220] };
        for _ in 0..w * h {
            data.images.extend_from_slice(&px);
        }
        data.labels
            .extend_from_slice(if red { &[1, 0] } else { &[0, 1] });
    }
    data
}

#[test]
fn a_cnn_learns_a_colour_to_genre_mapping_and_chooses_a_decision_that_separates_it() {
    let (w, h) = (16, 16);
    let data = colour_posters(w, h);
    let spec = spec(Architecture::SmallCnn, w, h);
    let params = TrainParams {
        epochs: 4,
        batch_size: 16,
        learning_rate: 0.01,
        ..TrainParams::default()
    };
    let dir = tempfile::tempdir().unwrap();
    let ctx = context(dir.path());
    let device = Device::flex();
    let autodiff = device.clone().autodiff();
    let task = ImageTask {
        train: &data,
        val: &data,
        spec: &spec,
        autodiff: &autodiff,
        inner: &device,
        frozen: None,
        val_batch: 32,
    };
    let labels = Labels {
        train: &data.labels,
        val: &data.labels,
        genres: 2,
    };
    let net = PosterNet::new(&spec, None, &autodiff);
    let fitted = fit::fit(&task, net, &params, &labels, "flex", &ctx).unwrap();
    let first = fitted.history.epochs[0].train_loss;
    let best = fitted.history.epochs[fitted.history.best_epoch - 1].val_loss;
    assert!(best < first * 0.5, "loss {first} -> {best}");
    let decision = fitted.decision.clone();
    assert_eq!(decision.apply(&fitted.val_probs, 2), data.labels);
}

#[test]
fn a_head_learns_from_embeddings_stops_early_and_round_trips_through_disk() {
    // 200 movies with 8-value embeddings: genre 0 lives in dimension 0, genre 1 in dimension 1.
    let dim = 8;
    let mut rows = EmbeddingShard::default();
    let mut rng = fit::SplitMix(3);
    let mut noise = move || (rng.next_u64() % 1000) as f32 / 1000.0 - 0.5;
    for i in 0..200 {
        let (a, b) = (i % 2 == 0, i % 3 == 0);
        rows.ids.push(i);
        rows.posters.push(format!("posters/{i}"));
        for d in 0..dim {
            let signal = match d {
                0 if a => 2.0,
                1 if b => 2.0,
                _ => 0.0,
            };
            rows.embeddings.push(signal + noise());
        }
        rows.labels.extend([u8::from(a), u8::from(b)]);
    }
    let mut spec = spec(Architecture::Mlp, 64, 96);
    let standardize = Standardize::fit(&rows.embeddings, dim);
    let mut train = rows.clone();
    standardize.apply(&mut train.embeddings);
    spec.embedding = Some(EmbeddingInput {
        backbone: "test".into(),
        dim,
        standardize,
    });
    let params = TrainParams {
        architecture: Architecture::Mlp,
        epochs: 200,
        batch_size: 32,
        learning_rate: 0.01,
        early_stopping: EarlyStopping {
            monitor: Monitor::ValLoss,
            patience: 3,
        },
        ..TrainParams::default()
    };
    let dir = tempfile::tempdir().unwrap();
    let ctx = context(dir.path());
    let device = Device::flex();
    let autodiff = device.clone().autodiff();
    let task = HeadTask {
        train: &train,
        val: &train,
        dim,
        genres: 2,
        autodiff: &autodiff,
        inner: &device,
        dropout: 0.1,
        masks: std::cell::RefCell::new(fit::SplitMix(1)),
    };
    let labels = Labels {
        train: &train.labels,
        val: &train.labels,
        genres: 2,
    };
    let net = HeadNet::new(&spec, dim, &autodiff);
    let fitted = fit::fit(&task, net, &params, &labels, "flex", &ctx).unwrap();
    assert!(
        fitted.history.stopped_early,
        "{:?}",
        fitted.history.epochs.len()
    );
    assert!(fitted.history.epochs.len() < 200);
    let decision = fitted.decision.clone();
    let predicted = decision.apply(&fitted.val_probs, 2);
    let correct = predicted
        .iter()
        .zip(&train.labels)
        .filter(|(p, t)| p == t)
        .count();
    assert!(correct >= 390, "{correct} of 400 decisions right");

    // Saved and loaded back, it scores an embed-layout split the same way.
    spec.decision = Some(decision);
    fitted.net.save_file(dir.path().join("model")).unwrap();
    write_json(&dir.path().join("model.json"), &spec).unwrap();
    write_json(&dir.path().join("history.json"), &fitted.history).unwrap();
    let data = dir.path().join("data");
    let split = data.join("val");
    std::fs::create_dir_all(&split).unwrap();
    stage_shards::embedding::write_embedding_shard(&split.join("s.parquet"), &rows, dim, 2)
        .unwrap();
    stage_shards::embedding::EmbeddingMeta {
        layout: stage_shards::embedding::EMBEDDING_LAYOUT.into(),
        dim,
        backbone: "test".into(),
        input_width: 64,
        input_height: 96,
        genres: spec.genres.clone(),
        shards: vec![stage_shards::ShardFile {
            file: "s.parquet".into(),
            rows: rows.len(),
        }],
    }
    .save(&split)
    .unwrap();
    let model = TrainedModel::load(dir.path(), &device).unwrap();
    let scored = model.predict_split(&data, "val", &device).unwrap();
    assert_eq!(scored.ids, rows.ids);
    for (a, b) in scored.probs.iter().zip(&fitted.val_probs) {
        assert!((a - b).abs() < 1e-5, "{a} vs {b}");
    }
    assert_eq!(split_labels(&data, "val").unwrap().1, rows.labels);
}

#[test]
fn fine_tuning_trains_the_last_blocks_and_leaves_the_frozen_ones_alone() {
    let (w, h) = (32, 32);
    let data = colour_posters(w, h);
    let spec = spec(Architecture::EfficientnetLite0, w, h);
    let params = TrainParams {
        architecture: Architecture::EfficientnetLite0,
        epochs: 1,
        batch_size: 16,
        learning_rate: 0.01,
        finetune_blocks: 2,
        ..TrainParams::default()
    };
    let dir = tempfile::tempdir().unwrap();
    let ctx = context(dir.path());
    let device = Device::flex();
    let autodiff = device.clone().autodiff();
    let net = PosterNet::new(&spec, Some(EfficientNetLite0::new(&autodiff)), &autodiff);
    let PosterNet::Lite0(start) = net.valid() else {
        unreachable!()
    };
    let first = BLOCKS - params.finetune_blocks;
    let task = ImageTask {
        train: &data,
        val: &data,
        spec: &spec,
        autodiff: &autodiff,
        inner: &device,
        frozen: Some((start.clone(), first)),
        val_batch: 32,
    };
    let labels = Labels {
        train: &data.labels,
        val: &data.labels,
        genres: 2,
    };
    let fitted = fit::fit(&task, net, &params, &labels, "flex", &ctx).unwrap();
    let PosterNet::Lite0(trained) = &fitted.net else {
        unreachable!()
    };
    let x = image_input(
        spec.architecture,
        &data.images[..w * h * 3 * 4],
        4,
        h,
        w,
        &device,
    );
    let values = |t: Tensor<4>| t.try_into_vec_as::<f32>().unwrap();
    assert_eq!(
        values(start.frozen_prefix(x.clone(), first)),
        values(trained.frozen_prefix(x.clone(), first)),
        "the frozen blocks did not move"
    );
    let logits = |n: &Lite0Classifier| {
        n.forward_from(n.frozen_prefix(x.clone(), first), first)
            .try_into_vec_as::<f32>()
            .unwrap()
    };
    assert_ne!(logits(&start), logits(trained), "the trained blocks did");
}
