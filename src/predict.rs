//! `pipeline predict POSTER...`: asks a trained model about posters on disk or on the web.
//!
//! Everything a poster goes through is the pipeline's own code: bytes come from the download
//! stage's fetcher (its size and time limits) or the file, then `stage_resize::fit_bytes_into`
//! (the decoder's limits refuse bombs and giant images, as `filter` does), the backbone as
//! `embed` runs it (one thread per pass, so the same bits), and the model's own probability
//! call, the one `evaluate` makes. The preprocessing is what the model's inputs were made with,
//! read from their stamps in the cache (`resize.json`, `embed.json`), never from today's
//! `pipeline.yaml`.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use pipeline_api::Stage;
use serde::Serialize;
use stage_backbone::{FrozenBackbones, FrozenLite, Variant, images_to_input};
use stage_download::{DownloadParams, Fetcher, Source, read_capped};
use stage_evaluate::Evaluate;
use stage_resize::{Mode, ResizeParams, fit_bytes_into};
use stage_train::{Device, ModelSpec, Train, TrainedModel};

use pipeline_engine::lock::LockFile;
use pipeline_engine::plan::Plan;
use pipeline_engine::record::{find_run, read_runs};
use pipeline_engine::store::Store;

/// What `pipeline predict` was asked.
pub struct PredictOptions<'a> {
    /// Poster paths or http(s) URLs.
    pub posters: &'a [String],
    /// A `train` stage, or a run id (prefix, `latest`, `previous`) whose model to use.
    pub model: Option<&'a str>,
    /// Genres to list per poster beyond those predicted.
    pub top: usize,
}

/// One poster's answer (`--json` prints a list of these).
#[derive(Debug, Serialize)]
pub struct Answer {
    /// As given.
    pub poster: String,
    /// The genres the model's decision rule predicts, most probable first.
    pub genres: Vec<GenreScore>,
    /// The `--top` most probable genres, predicted or not.
    pub top: Vec<GenreScore>,
    /// Every genre's probability, in the model's genre order.
    pub probabilities: Vec<f32>,
    /// blake3 of the resized RGB pixels (`height x width x 3` u8) the model or backbone read.
    pub input_blake3: String,
    /// Why it could not be answered (the other fields are then empty).
    pub error: Option<String>,
}

/// A genre with its probability.
#[derive(Debug, Serialize)]
pub struct GenreScore {
    /// The genre.
    pub genre: String,
    /// Its probability.
    pub probability: f32,
    /// Whether the decision rule predicts it.
    pub predicted: bool,
    /// Its threshold under the rule (`null` under `top-k`).
    pub threshold: Option<f32>,
}

/// Which model answers, and what its inputs were made with.
#[derive(Debug, Serialize)]
pub struct ModelChoice {
    /// The `train` stage that made it.
    pub stage: String,
    /// Its cache key.
    pub key: String,
    /// `mlp on efficientnet-lite0 embeddings (224x336)`.
    pub describe: String,
    /// Its decision rule.
    pub rule: String,
    /// How posters are fitted before it (or its backbone) sees them.
    pub width: u32,
    /// Input height.
    pub height: u32,
    /// Resize mode.
    pub mode: Mode,
}

/// The whole answer of one `pipeline predict`.
#[derive(Debug, Serialize)]
pub struct Prediction {
    /// The model.
    pub model: ModelChoice,
    /// Per poster, in the order given.
    pub posters: Vec<Answer>,
}

/// Cache keys of stages: the lock file's, or those a recorded run used.
struct Keys {
    lock: LockFile,
    run: Option<Vec<(String, String)>>,
}

impl Keys {
    fn of(&self, stage: &str) -> Option<String> {
        match &self.run {
            Some(keys) => keys
                .iter()
                .find(|(s, _)| s == stage)
                .map(|(_, k)| k.clone()),
            None => self.lock.stages.get(stage).map(|s| s.key.clone()),
        }
    }
}

/// The `train` stage `pipeline predict` uses by default: the one `evaluate` calls its primary
/// model, else the last `train` stage in the file.
fn default_model_stage(plan: &Plan) -> Option<String> {
    plan.stages
        .iter()
        .find(|s| s.stage.info().kind == Evaluate.info().kind)
        .and_then(|s| s.inputs.get("model").cloned())
        .or_else(|| {
            plan.stages
                .iter()
                .rfind(|s| s.stage.info().kind == Train.info().kind)
                .map(|s| s.name.clone())
        })
}

/// Resolves `--model` into (stage, keys to look stages up with).
fn choose(plan: &Plan, wanted: Option<&str>) -> anyhow::Result<(String, Keys)> {
    let lock = LockFile::load(&plan.root.join("pipeline.lock"));
    let trains: Vec<&str> = plan
        .stages
        .iter()
        .filter(|s| s.stage.info().kind == Train.info().kind)
        .map(|s| s.name.as_str())
        .collect();
    let default = || {
        default_model_stage(plan).context("the pipeline has no `train` stage, so no model to ask")
    };
    match wanted {
        None => Ok((default()?, Keys { lock, run: None })),
        Some(name) if trains.contains(&name) => Ok((name.to_string(), Keys { lock, run: None })),
        Some(name) if plan.stage(name).is_some() => bail!(
            "`{name}` is a `{}` stage, not a model; `--model` takes a train stage ({}) or a run id from `pipeline log`",
            plan.stage(name).map_or("", |s| s.stage.info().kind),
            trains.join(", ")
        ),
        Some(wanted) => {
            let runs = read_runs(&Store::new(plan.root.join("cache")).runs_path());
            let with_ids: Vec<_> = runs.iter().filter(|r| !r.id.is_empty()).collect();
            let ids: Vec<&str> = with_ids.iter().map(|r| r.id.as_str()).collect();
            let run = find_run(&ids, wanted)
                .map_err(anyhow::Error::msg)?
                .map(|i| with_ids[i]);
            let run = run.with_context(|| {
                format!(
                    "`{wanted}` is neither a train stage ({}) nor a recorded run id (`pipeline log` lists them)",
                    trains.join(", ")
                )
            })?;
            let stage = default()?;
            let keys: Vec<(String, String)> = run
                .stages
                .iter()
                .filter(|s| s.action.made_output())
                .filter_map(|s| Some((s.name.clone(), s.key.clone()?)))
                .collect();
            if !keys.iter().any(|(s, _)| *s == stage) {
                bail!(
                    "run {} did not bring `{stage}` up to date, so it has no model of its own; pick a run that did (`pipeline log`)",
                    run.id
                );
            }
            Ok((
                stage,
                Keys {
                    lock,
                    run: Some(keys),
                },
            ))
        }
    }
}

/// How the model's inputs were made: the fit of the posters, and the backbone for a head.
struct Preprocess {
    fit: ResizeParams,
    backbone: Option<FrozenBackbones>,
}

/// How a new poster is prepared for the model, from what `train` recorded in `model.json`: its
/// fit, and for a head the backbones that embedded the training posters, found among the
/// pipeline's files by the digest they ran with.
fn preprocess(
    plan: &Plan,
    keys: &Keys,
    stage: &str,
    spec: &ModelSpec,
    device: &Device,
) -> anyhow::Result<Preprocess> {
    let preparation = spec.preparation.as_ref().with_context(|| {
        format!(
            "`{stage}`'s model does not record how its posters were prepared (an older build trained it); rerun `pipeline run {stage}`"
        )
    })?;
    let fit = ResizeParams {
        width: preparation.width as u32,
        height: preparation.height as u32,
        mode: preparation.mode,
        shard_rows: 1,
    };
    if preparation.backbones.is_empty() {
        return Ok(Preprocess {
            fit,
            backbone: None,
        });
    }
    let mut nets = Vec::new();
    for used in &preparation.backbones {
        let variant = Variant::from_name(&used.name).with_context(|| {
            format!(
                "`{stage}` was trained on `{}` embeddings, a backbone this build does not know; rerun `pipeline run`",
                used.name
            )
        })?;
        let weights = weights_file(plan, keys, &used.weights_blake3).with_context(|| {
            format!(
                "the `{}` weights `{stage}`'s embeddings were made with (blake3 {}...) are not among the pipeline's files any more; restore them, or rerun `pipeline run` so model and weights agree",
                used.name,
                used.weights_blake3.get(..16).unwrap_or(&used.weights_blake3)
            )
        })?;
        nets.push(FrozenLite::new(&stage_backbone::load(
            &weights, variant, device,
        )?));
    }
    Ok(Preprocess {
        fit,
        backbone: Some(FrozenBackbones::new(nets, preparation.flip)),
    })
}

/// The workspace file whose content has `digest`: among those the lock file records for any
/// stage, hashed again, since it must have that content now.
fn weights_file(plan: &Plan, keys: &Keys, digest: &str) -> Option<PathBuf> {
    keys.lock
        .stages
        .values()
        .flat_map(|s| s.fingerprint.files.values())
        .filter(|file| file.digest == digest)
        .map(|file| plan.root.join(&file.path))
        .find(|path| pipeline_api::file_digest(path).is_ok_and(|d| d == digest))
}

/// Reads one poster's bytes: an http(s) URL through the download stage's fetcher, or a file (a
/// path or a `file://` URL), a regular one of at most the fetcher's `max_bytes`.
fn poster_bytes(
    source: &str,
    max_bytes: u64,
    fetcher: &dyn Fn() -> anyhow::Result<Fetcher>,
) -> Result<Vec<u8>, String> {
    // The download stage's own reading of a source: the same schemes, in any case.
    let path = match Source::parse(source) {
        remote @ Source::Http(_) => {
            let fetcher = fetcher().map_err(|e| format!("{e:#}"))?;
            return fetcher.fetch(remote).map_err(|e| e.to_string());
        }
        Source::File(path) | Source::Path(path) => path,
        Source::Unsupported(scheme) => {
            return Err(format!(
                "unsupported scheme `{scheme}://`: give a path, a file:// URL or an http(s) URL"
            ));
        }
    };
    read_capped(Path::new(path), max_bytes).map_err(|e| format!("cannot read `{path}`: {e}"))
}

/// Checks the model's cache entry against its manifest, as a stage checks its inputs before it
/// reads them: a damaged model answers nothing rather than NaN.
fn check_entry(store: &Store, stage: &str, key: &str) -> anyhow::Result<()> {
    let short = &key[..key.len().min(16)];
    if store.manifest(key).is_none() {
        bail!(
            "no trained model in the cache for `{stage}` (key {short}); `pipeline run {stage}` trains it"
        );
    }
    let problems = store.verify(key);
    if !problems.is_empty() {
        bail!(
            "the cached model of `{stage}` (entry {short}) is damaged: {}\n  help: `pipeline verify --repair` removes damaged entries, then `pipeline run {stage}` trains it again",
            problems.join(", ")
        );
    }
    Ok(())
}

/// Answers `options` with the chosen model.
pub fn predict(plan: &Plan, options: &PredictOptions<'_>) -> anyhow::Result<Prediction> {
    let (stage, keys) = choose(plan, options.model)?;
    let store = Store::new(plan.root.join("cache"));
    let key = keys.of(&stage).with_context(|| {
        format!("no trained model yet: `{stage}` has not run; `pipeline run {stage}` trains it")
    })?;
    check_entry(&store, &stage, &key)?;
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
        let probs = match probs {
            Ok(probs) => probs,
            Err(error) => {
                answers.push(Answer {
                    poster: source.clone(),
                    genres: Vec::new(),
                    top: Vec::new(),
                    probabilities: Vec::new(),
                    input_blake3: String::new(),
                    error: Some(error),
                });
                continue;
            }
        };
        let predicted = decision.apply(&probs, genres.len());
        let score = |g: usize| GenreScore {
            genre: genres[g].clone(),
            probability: probs[g],
            predicted: predicted[g] == 1,
            threshold: decision
                .top_k
                .is_none()
                .then(|| decision.thresholds.get(g).copied())
                .flatten(),
        };
        let mut order: Vec<usize> = (0..genres.len()).collect();
        order.sort_by(|&a, &b| probs[b].total_cmp(&probs[a]));
        answers.push(Answer {
            poster: source.clone(),
            genres: order
                .iter()
                .filter(|&&g| predicted[g] == 1)
                .map(|&g| score(g))
                .collect(),
            top: order.iter().take(options.top).map(|&g| score(g)).collect(),
            input_blake3: blake3::hash(&pixels).to_hex().to_string(),
            probabilities: probs,
            error: None,
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

/// The answer for a person.
pub fn render(prediction: &Prediction) -> String {
    let m = &prediction.model;
    let mut out = format!(
        "{} (`{}`, decision `{}`; posters fitted to {}x{})",
        m.describe, m.stage, m.rule, m.width, m.height
    );
    for answer in &prediction.posters {
        if let Some(error) = &answer.error {
            out.push_str(&format!("\n{}: error: {error}", answer.poster));
            continue;
        }
        let genres = if answer.genres.is_empty() {
            "no genre above its threshold".to_string()
        } else {
            answer
                .genres
                .iter()
                .map(|g| format!("{} {:.2}", g.genre, g.probability))
                .collect::<Vec<_>>()
                .join(", ")
        };
        out.push_str(&format!("\n{}: {genres}", answer.poster));
        if !answer.top.is_empty() {
            let top = answer
                .top
                .iter()
                .map(|g| {
                    format!(
                        "{} {:.2}{}",
                        g.genre,
                        g.probability,
                        if g.predicted { "*" } else { "" }
                    )
                })
                .collect::<Vec<_>>()
                .join(", ");
            out.push_str(&format!("\n  top {}: {top}", answer.top.len()));
        }
    }
    out
}
