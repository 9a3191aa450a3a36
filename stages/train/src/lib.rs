//! `train`: a multi-label genre classifier with Burn: sigmoid outputs, binary cross-entropy with
//! logits (optional per-genre `pos_weight`), Adam or AdamW, early stopping that keeps the best
//! epoch, and a decision rule chosen on the validation split.
//!
//! Two families of networks, told apart by what their `data` input holds:
//! - heads (`linear`, `mlp`) read frozen backbone embeddings from an `embed` output; on 16,000
//!   posters an epoch takes about a second;
//! - image networks (`small-cnn`, `keras-baseline`, `efficientnet-lite0`) read image shards from a
//!   `split` output; `efficientnet-lite0` starts from the ImageNet weights bound as
//!   `files: {weights: ...}` and fine-tunes its last `finetune_blocks` blocks.
//!
//! Runs on Burn's pure-Rust `flex` CPU backend; built with the `tch` feature it can run on libtorch
//! (`PIPELINE_DEVICE=cuda` or `torch-cpu`). The device is a runtime knob and never part of the
//! cache key. Writes `model.bpk` (the weights of the kept epoch), `model.json` (what rebuilds the
//! network, and its decision rule) and `history.json` (per-epoch losses and validation F1).
//!
//! What lives where: `params` (the params and their checks), `spec` (the architectures by family and
//! `ModelSpec`: what `model.json` holds), `model` (the image networks), `head` (the heads, and an ensemble merged into one),
//! `head_task` and `image_task` (what each family feeds the loop), `fit` (the loop: resume, epochs,
//! validation, early stopping), `task` (what a family gives the loop), `loss` (and reading it), `history` (`history.json`, no clock readings),
//! `checkpoint` (resumable state), `batches`, `augment`, `noise` (seeded draws), `schedule`, and
//! `trained` (a trained model as `evaluate` and `predict` load it).

pub mod augment;
pub mod batches;
pub mod checkpoint;
pub mod fit;
pub mod head;
mod head_task;
pub mod history;
mod image_task;
pub mod loss;
pub mod model;
pub mod noise;
mod outcome;
pub mod params;
pub mod schedule;
pub mod spec;
pub mod task;
pub mod trained;

use pipeline_api::{
    Kind, KindInfo, ParamError, RequiredFile, RunSummary, StageContext, StageError, write_json,
};

/// The compute device type and its selection, for stages that run a trained model.
pub use burn::prelude::Device;
pub use head::HeadNet;
pub use history::{EpochRecord, History, Monitor};
pub use model::{PosterNet, image_input, images_to_tensor};
pub use params::{EarlyStopping, Loss, Optimizer, TrainParams};
pub use spec::{
    Architecture, EmbeddingInput, Family, HeadArchitecture, ImageArchitecture, ModelSpec, Reads,
    Standardize,
};
pub use stage_backbone::{choose_device, select_device, supported_devices};
pub use trained::{Scored, TrainedModel, split_labels};

use outcome::Trained;
use task::TrainingRun;

/// The train stage kind.
pub struct Train;

impl Kind for Train {
    type Params = TrainParams;
    const INFO: KindInfo = KindInfo {
        inputs: &["data"],
        input_kinds: &[("data", &["split", "embed"])],
        optional_files: &["weights"],
        ..KindInfo::new(
            "train",
            // 5: shuffling, dropout and augmentation draw from ChaCha8 (rand_chacha), not splitmix64.
            // 6: dropout masks from a counter-based hash keyed by one draw, made on the GPU there.
            // 7: `auto` keeps the best macro-F1 among rules 0.05 micro-F1 above the baseline; `shrunk`.
            // 8: no clock readings in `history.json`; `model.safetensors` metadata in sorted order;
            // `model.json` records how posters were prepared for the model (for `predict`).
            8,
            "train a multi-label genre classifier with Burn: a head on embeddings or a CNN on images",
            pipeline_api::locked_dependencies!(),
        )
    };
    fn check(params: &TrainParams) -> Result<(), ParamError> {
        params.check()
    }
    fn required_files(params: &TrainParams) -> Vec<RequiredFile> {
        match params.architecture.family() {
            Family::Images(ImageArchitecture::EfficientnetLite0) => vec![RequiredFile {
                role: "weights",
                why: image_task::LITE0_WEIGHTS.into(),
            }],
            _ => Vec::new(),
        }
    }
    fn run(&self, ctx: &StageContext<'_>, params: TrainParams) -> Result<RunSummary, StageError> {
        let data = ctx.input("data")?;
        let (device, device_name) =
            select_device().map_err(|e| StageError::invalid(e.to_string()))?;
        let run = TrainingRun {
            ctx,
            params: &params,
            data,
            device: &device,
            device_name: &device_name,
        };
        let Trained {
            spec,
            history,
            timings,
        } = match params.architecture.family() {
            Family::Head(head) => head_task::train_head(head, &run)?,
            Family::Images(network) => image_task::train_images(network, &run)?,
        };
        write_json(&ctx.out_dir.join("model.json"), &spec)?;
        write_json(&ctx.out_dir.join("history.json"), &history)?;
        // Read back as evaluate and predict read it, then written for other tools.
        TrainedModel::load(ctx.out_dir, &device)?
            .export_safetensors(&ctx.out_dir.join("model.safetensors"))?;
        let best = &history.epochs[history.best_epoch - 1];
        let decision = spec.decision.as_ref().expect("train always decides");
        let fit_seconds: f64 = timings.iter().map(|t| t.seconds).sum();
        Ok(RunSummary::new([
            format!(
                "{} on {}: {} epochs over {} posters in {:.1}s; kept epoch {} by {} (train loss {:.4}, val loss {:.4}){}",
                spec.describe(),
                history.device,
                history.epochs.len(),
                history.train_rows,
                fit_seconds,
                history.best_epoch,
                history.monitor.name(),
                best.train_loss,
                best.val_loss,
                if history.stopped_early {
                    ", stopped early"
                } else {
                    ""
                }
            ),
            format!(
                "decision `{}` (val micro-F1 {:.3}, macro-F1 {:.3}; constant baseline {:.3} / {:.3})",
                decision.rule.name(),
                best.val_micro_f1,
                best.val_macro_f1,
                decision.baseline.micro_f1,
                decision.baseline.macro_f1
            ),
        ])
        .measure("fit_seconds", fit_seconds)
        .measure("fits", &timings))
    }
}

#[cfg(test)]
mod tests;
