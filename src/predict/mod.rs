//! `pipeline predict POSTER...`: asks a trained model about posters on disk or on the web.
//!
//! Everything a poster goes through is the pipeline's own code: bytes come from the download
//! stage's fetcher (its size and time limits) or the file, then `stage_resize::fit_bytes_into`
//! (the decoder's limits refuse bombs and giant images, as `filter` does), the backbone as
//! `embed` runs it (one thread per pass, so the same bits), and the model's own probability
//! call, the one `evaluate` makes. The preprocessing is what the model's inputs were made with,
//! read from their stamps in the cache (`resize.json`, `embed.json`), never from today's
//! `pipeline.yaml`.
//!
//! What lives where: this file answers the posters; `model` resolves `--model` and checks the
//! model's entry, `input` prepares a poster as the model's inputs were, `answer` holds the
//! answers and their rendering for a person.

mod answer;
mod input;
mod model;

use anyhow::{Context, bail};
use pipeline_api::Stage;
use stage_backbone::images_to_input;
use stage_download::{DownloadParams, Fetcher};
use stage_resize::fit_bytes_into;
use stage_train::TrainedModel;

use pipeline_engine::plan::Plan;
use pipeline_engine::store::Store;

pub use answer::{Answer, GenreScore, ModelChoice, Prediction, render};
use input::{poster_bytes, preprocess};
use model::{check_entry, choose};

/// What `pipeline predict` was asked.
pub struct PredictOptions<'a> {
    /// Poster paths or http(s) URLs.
    pub posters: &'a [String],
    /// A `train` stage, or a run id (prefix, `latest`, `previous`) whose model to use.
    pub model: Option<&'a str>,
    /// Genres to list per poster beyond those predicted.
    pub top: usize,
}

/// Answers `options` with the chosen model.
pub fn predict(plan: &Plan, options: &PredictOptions<'_>) -> anyhow::Result<Prediction> {
    let (stage, keys) = choose(plan, options.model)?;
    let store = Store::new(plan.root.join("cache"));
    let key = keys.of(&stage).with_context(|| {
        format!("no trained model yet: `{stage}` has not run; `pipeline run {stage}` trains it")
    })?;
    check_entry(&store, &stage, &key, &keys)?;
    let out = store.out_dir(&key);
    let (device, _) = stage_train::select_device()?;
    let model = TrainedModel::load(&out, &device)?;
    let pre = preprocess(plan, &keys, &stage, &model.spec, &device)?;
    let (w, h) = (pre.fit.width as usize, pre.fit.height as usize);
    if pre.backbone.is_none() && (w, h) != (model.spec.width, model.spec.height) {
        bail!(
            "`{stage}` was trained on {}x{} images but its inputs are stamped {w}x{h}; rerun `pipeline run {stage}`",
            model.spec.width,
            model.spec.height
        );
    }
    let decision =
        model.spec.decision.clone().context(
            "the model has no decision rule: it was trained by an older `train`; rerun it",
        )?;
    let download_params: DownloadParams = keys
        .lock
        .stages
        .values()
        .find(|s| s.fingerprint.kind == stage_download::Download.info().kind)
        .and_then(|s| serde_json::from_value(s.fingerprint.params.clone()).ok())
        .unwrap_or_default();
    let fetcher = || -> anyhow::Result<Fetcher> {
        Ok(Fetcher::new(&download_params, &std::env::current_dir()?)?)
    };
    // One pass on one thread, as `embed` runs them: the same features, bit for bit.
    let single = rayon::ThreadPoolBuilder::new().num_threads(1).build()?;
    let genres = &model.spec.genres;
    let mut answers = Vec::new();
    for source in options.posters {
        let mut pixels = vec![0u8; w * h * 3];
        let probs = poster_bytes(source, download_params.max_bytes, &fetcher)
            .and_then(|bytes| fit_bytes_into(&bytes, &pre.fit, &mut pixels))
            .and_then(|()| {
                let embedding = match &pre.backbone {
                    Some(backbone) => Some(
                        single
                            .install(|| {
                                let x = images_to_input(&pixels, 1, h, w, &device);
                                backbone.embeddings(x).try_into_vec_as::<f32>()
                            })
                            .map_err(|e| format!("reading the embedding: {e:?}"))?,
                    ),
                    None => None,
                };
                model
                    .poster_probabilities(&pixels, embedding, &device)
                    .map_err(|e| e.to_string())
            });
        answers.push(match probs {
            Ok(probs) => Answer::scored(source, probs, &pixels, &decision, genres, options.top),
            Err(error) => Answer::failed(source, error),
        });
    }
    Ok(Prediction {
        model: ModelChoice {
            stage,
            key,
            describe: model.spec.describe(),
            rule: decision.rule.name().to_string(),
            width: pre.fit.width,
            height: pre.fit.height,
            mode: pre.fit.mode,
        },
        posters: answers,
    })
}
