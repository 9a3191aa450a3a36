//! Unit tests of the training loop on tiny synthetic data.

use std::path::Path;

use burn::prelude::*;

use super::*;
use crate::augment::Augment;
use crate::batches::{Batch, BatchStream, ImageSplit, Pass};
use crate::fit;
use crate::head_task::HeadTask;
use crate::image_task::ImageTask;
use crate::model::Lite0Classifier;
use crate::schedule::Schedule;
use crate::task::{Labels, Task};
use pipeline_api::{NoItems, NoProgress};
use stage_backbone::BLOCKS;
use stage_backbone::{EfficientNetLite, Variant};
use stage_shards::embedding::EmbeddingShard;

fn context<'a>(out_dir: &'a Path, work_dir: &'a Path) -> StageContext<'a> {
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
        work_dir,
        shard: None,
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
        preparation: None,
    }
}

/// 64 posters, each one colour: red ones are genre 0, blue ones genre 1.
fn colour_posters(w: usize, h: usize) -> stage_shards::Shard {
    let mut data = stage_shards::Shard::default();
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

/// Writes `data` as the image split `name` below `root`, `shard_rows` posters per shard.
fn write_split(
    root: &Path,
    name: &str,
    data: &stage_shards::Shard,
    [w, h]: [usize; 2],
    shard_rows: usize,
) -> ImageSplit {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    let (pixels, genres) = (w * h * 3, 2);
    let mut meta = stage_shards::ShardMeta {
        width: w,
        height: h,
        channels: 3,
        layout: "HWC".into(),
        genres: vec!["red".into(), "blue".into()],
        shards: Vec::new(),
        mode: None,
    };
    for (n, start) in (0..data.len()).step_by(shard_rows).enumerate() {
        let mut part = stage_shards::Shard::default();
        for i in start..(start + shard_rows).min(data.len()) {
            part.push_row(data, i, pixels, genres);
        }
        let file = format!("shard-{n:05}.parquet");
        stage_shards::write_shard(&dir.join(&file), &part, pixels, genres).unwrap();
        meta.shards.push(stage_shards::ShardFile {
            file,
            rows: part.len(),
        });
    }
    meta.save(&dir).unwrap();
    ImageSplit::open(root, name).unwrap()
}

fn image_task<'a>(
    train: &'a ImageSplit,
    val: &'a ImageSplit,
    spec: &'a ModelSpec,
    devices: &'a (Device, Device),
    params: &TrainParams,
) -> ImageTask<'a> {
    ImageTask {
        train,
        val,
        spec,
        autodiff: &devices.1,
        inner: &devices.0,
        frozen: None,
        batch_size: params.batch_size,
        window_rows: params.shuffle_window,
        augment: params.augment.clone(),
        normalize: model::normalize(spec.architecture.images().unwrap()),
    }
}

/// The device `PIPELINE_DEVICE` names (flex by default): `scripts/build-tch.sh` runs these tests
/// on libtorch.
fn device() -> Device {
    select_device()
        .expect("PIPELINE_DEVICE names a device this build has")
        .0
}

fn devices() -> (Device, Device) {
    let device = device();
    let autodiff = device.clone().autodiff();
    (device, autodiff)
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
    let (dir, work) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let ctx = context(dir.path(), work.path());
    let split = write_split(dir.path(), "train", &data, [w, h], 20);
    let devices = devices();
    let task = image_task(&split, &split, &spec, &devices, &params);
    let labels = Labels {
        train: &data.labels,
        val: &data.labels,
        genres: 2,
    };
    // Every network in these tests is built as the stage builds it, under the one lock: one built
    // beside it would draw from Burn's process-wide generator while the determinism test draws.
    let net = noise::initialise(&devices.1, params.seed, || {
        PosterNet::new(spec.architecture.images().unwrap(), &spec, None, &devices.1)
    });
    let fitted = fit::fit(&task, net, &params, &labels, "flex", &ctx, ctx.work_dir).unwrap();
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
    let mut rng = noise::Draws::seeded(3);
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
    let (dir, work) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let ctx = context(dir.path(), work.path());
    let device = device();
    let autodiff = device.clone().autodiff();
    let task = HeadTask {
        train: &train,
        val: &train,
        dim,
        genres: 2,
        autodiff: &autodiff,
        inner: &device,
        dropout: 0.1,
        batch_size: params.batch_size,
    };
    let labels = Labels {
        train: &train.labels,
        val: &train.labels,
        genres: 2,
    };
    let net = noise::initialise(&autodiff, params.seed, || {
        HeadNet::new(spec.architecture.head().unwrap(), &spec, dim, &autodiff)
    });
    let fitted = fit::fit(&task, net, &params, &labels, "flex", &ctx, ctx.work_dir).unwrap();
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
        preparation: None,
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
    let (dir, work) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let ctx = context(dir.path(), work.path());
    let split = write_split(dir.path(), "train", &data, [w, h], 64);
    let devices = devices();
    let device = devices.0.clone();
    let autodiff = devices.1.clone();
    let net = noise::initialise(&autodiff, 0, || {
        PosterNet::new(
            ImageArchitecture::EfficientnetLite0,
            &spec,
            Some(EfficientNetLite::new(Variant::Lite0, &autodiff)),
            &autodiff,
        )
    });
    let PosterNet::Lite0(start) = net.valid() else {
        unreachable!()
    };
    let first = BLOCKS - params.finetune_blocks;
    let mut task = image_task(&split, &split, &spec, &devices, &params);
    task.frozen = Some((start.clone(), first));
    let labels = Labels {
        train: &data.labels,
        val: &data.labels,
        genres: 2,
    };
    let fitted = fit::fit(&task, net, &params, &labels, "flex", &ctx, ctx.work_dir).unwrap();
    let PosterNet::Lite0(trained) = &fitted.net else {
        unreachable!()
    };
    let x = image_input(
        ImageArchitecture::EfficientnetLite0,
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
        n.forward_from(n.frozen_prefix(x.clone(), first), first, None)
            .try_into_vec_as::<f32>()
            .unwrap()
    };
    assert_ne!(logits(&start), logits(trained), "the trained blocks did");
}

/// Trains `epochs` of a small CNN with augmentation and dropout on `split`, in `work`; `fail_at`
/// makes the batches of that epoch fail, as a crash would end the run there.
fn train_cnn(
    split: &ImageSplit,
    data: &stage_shards::Shard,
    work: &Path,
    out: &Path,
    fail_at: Option<usize>,
) -> Result<Vec<u8>, StageError> {
    let (w, h) = (split.meta.width, split.meta.height);
    let spec = spec(Architecture::SmallCnn, w, h);
    let params = TrainParams {
        epochs: 5,
        batch_size: 8,
        learning_rate: 0.01,
        shuffle_window: 24,
        augment: Augment {
            hflip: true,
            crop_min_area: 0.7,
            translate: 0.05,
            jitter: 0.1,
        },
        schedule: Schedule {
            decay: schedule::Decay::Cosine,
            warmup_epochs: 1.0,
            ..Schedule::default()
        },
        ..TrainParams::default()
    };
    let ctx = context(out, work);
    let devices = devices();
    struct Failing<'a>(ImageTask<'a>, Option<usize>);
    impl Task for Failing<'_> {
        type Net = PosterNet;
        type Batch = Batch;
        fn train_rows(&self) -> usize {
            self.0.train_rows()
        }
        fn train_batches(
            &self,
            seed: u64,
            epoch: usize,
        ) -> Box<dyn Iterator<Item = Result<Batch, StageError>> + '_> {
            if Some(epoch) == self.1 {
                return Box::new(std::iter::once(Err(StageError::invalid("killed"))));
            }
            self.0.train_batches(seed, epoch)
        }
        fn batch_rows(batch: &Batch) -> usize {
            batch.rows
        }
        fn train_step(
            &self,
            net: &PosterNet,
            batch: Batch,
            dropout: &mut noise::Draws,
        ) -> (Tensor<2>, Tensor<2, Int>) {
            self.0.train_step(net, batch, dropout)
        }
        fn val_logits(&self, net: &PosterNet) -> Result<Vec<f32>, StageError> {
            self.0.val_logits(net)
        }
    }
    let task = Failing(image_task(split, split, &spec, &devices, &params), fail_at);
    let labels = Labels {
        train: &data.labels,
        val: &data.labels,
        genres: 2,
    };
    let net = noise::initialise(&devices.1, params.seed, || {
        PosterNet::new(spec.architecture.images().unwrap(), &spec, None, &devices.1)
    });
    let fitted = fit::fit(&task, net, &params, &labels, "flex", &ctx, ctx.work_dir)?;
    fitted.net.save_file(out.join("model")).unwrap();
    Ok(std::fs::read(out.join("model.bpk")).unwrap())
}

#[test]
fn the_same_seed_trains_the_same_bytes_and_a_run_killed_mid_way_resumes_to_them() {
    let (w, h) = (12, 12);
    let data = colour_posters(w, h);
    let root = tempfile::tempdir().unwrap();
    let split = write_split(root.path(), "train", &data, [w, h], 10);
    let (a, b, c) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let once = train_cnn(&split, &data, &a.path().join("work"), a.path(), None).unwrap();
    let again = train_cnn(&split, &data, &b.path().join("work"), b.path(), None).unwrap();
    assert!(
        once == again,
        "two trainings with one seed wrote different weights"
    );

    // Dies during epoch 4: the checkpoint after epoch 3 is left in the working area.
    let work = c.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    let err = train_cnn(&split, &data, &work, c.path(), Some(4)).unwrap_err();
    assert!(err.to_string().contains("killed"), "{err}");
    let left = checkpoint::latest(&work).0.expect("a checkpoint");
    assert_eq!(left.state.epochs_done, 3);
    let resumed = train_cnn(&split, &data, &work, c.path(), None).unwrap();
    assert!(
        resumed == once,
        "the resumed run wrote other weights than an uninterrupted one"
    );
    // A finished training is not redone: with every epoch checkpointed, a rerun trains nothing
    // (its batches would fail if it asked for any).
    let finished = train_cnn(&split, &data, &work, c.path(), Some(1)).unwrap();
    assert!(finished == once);

    // A damaged checkpoint (same size, other bytes) is discarded with a line, never resumed.
    let d = tempfile::tempdir().unwrap();
    let work = d.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    train_cnn(&split, &data, &work, d.path(), Some(4)).unwrap_err();
    let best = work.join("checkpoint-0003/best.bpk");
    let mut bytes = std::fs::read(&best).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&best, bytes).unwrap();
    let (found, discarded) = checkpoint::latest(&work);
    assert!(
        found.is_none(),
        "a damaged checkpoint was offered for resuming"
    );
    assert_eq!(discarded.len(), 1, "{discarded:?}");
    assert!(
        discarded[0].contains("epoch 3") && discarded[0].contains("`best.bpk` does not match"),
        "{discarded:?}"
    );
    assert!(
        !work.join("checkpoint-0003").exists(),
        "the damaged one is removed"
    );
    let restarted = train_cnn(&split, &data, &work, d.path(), None).unwrap();
    assert!(
        restarted == once,
        "training from the start wrote other weights"
    );
}

#[test]
fn streamed_epochs_cover_every_poster_once_in_an_order_of_their_own_within_the_window() {
    let (w, h) = (4, 4);
    let mut data = colour_posters(w, h);
    // Tag each poster in its first pixel so a batch says which posters it holds.
    for i in 0..data.len() {
        data.images[i * w * h * 3] = i as u8;
    }
    let root = tempfile::tempdir().unwrap();
    let split = write_split(root.path(), "train", &data, [w, h], 10);
    let normalize = augment::Normalize {
        scale: 1.0,
        shift: 0.0,
    };
    let pass = |shuffle| Pass {
        batch_size: 7,
        shuffle,
        window_rows: 20,
        augment: Augment::default(),
        normalize,
    };
    let posters = |pass: Pass| -> Vec<Vec<u8>> {
        BatchStream::start(&split, pass)
            .map(|b| {
                let b = b.unwrap();
                (0..b.rows).map(|r| b.input[r * w * h * 3] as u8).collect()
            })
            .collect()
    };
    let epoch1 = posters(pass(Some((7, 1))));
    assert!(epoch1[..epoch1.len() - 1].iter().all(|b| b.len() == 7));
    let mut seen: Vec<u8> = epoch1.concat();
    seen.sort();
    assert_eq!(seen, (0..64).collect::<Vec<u8>>());
    assert_eq!(
        epoch1,
        posters(pass(Some((7, 1)))),
        "same seed and epoch, same batches"
    );
    assert_ne!(
        epoch1,
        posters(pass(Some((7, 2)))),
        "another epoch, another order"
    );
    // The first batch comes from the first window: at most three 10-poster shards (20 + one).
    let first_shards: std::collections::BTreeSet<u8> = epoch1[0].iter().map(|p| p / 10).collect();
    assert!(first_shards.len() <= 3, "{first_shards:?}");
    // Unshuffled (validation): shard order, which is the order of `labels()`.
    let plain = posters(pass(None)).concat();
    assert_eq!(plain, (0..64).collect::<Vec<u8>>());
    assert_eq!(split.labels().unwrap(), data.labels);
}
