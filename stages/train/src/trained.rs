//! A trained model read back from a `train` output, and its probabilities on a split of the data it
//! was trained on (images or embeddings).

use std::collections::BTreeMap;
use std::path::Path;

use burn::prelude::*;
use burn::store::{BurnToPyTorchAdapter, ModuleSnapshot, SafetensorsStore};
use burn::tensor::activation::sigmoid;
use pipeline_api::{ResultExt, StageError, read_file, read_json, write_file};
use stage_shards::embedding::{
    EmbeddingMeta, is_embedding_dir, load_embeddings, read_embedding_labels,
};
use stage_shards::{ShardMeta, read_shard_labels};

use crate::head::HeadNet;
use crate::history::History;
use crate::model::{PosterNet, image_input};
use crate::spec::{Family, ModelSpec};

/// The network of a trained model.
#[allow(clippy::large_enum_variant)] // one per process
pub enum TrainedNet {
    /// Reads images.
    Images(PosterNet),
    /// Reads embeddings.
    Head(HeadNet),
}

/// A model as `train` left it: network, spec (with its decision rule) and history.
pub struct TrainedModel {
    /// The network, in inference mode.
    pub net: TrainedNet,
    /// `model.json`.
    pub spec: ModelSpec,
    /// `history.json`.
    pub history: History,
}

/// Probabilities of a model on one split, in the split's row order.
#[derive(Debug, Clone, Default)]
pub struct Scored {
    /// Movie ids.
    pub ids: Vec<i64>,
    /// Poster file per row.
    pub posters: Vec<String>,
    /// True labels `[rows, genres]`.
    pub labels: Vec<u8>,
    /// Sigmoid probabilities `[rows, genres]`.
    pub probs: Vec<f32>,
}

impl Scored {
    /// Number of rows.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether it has no rows.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

impl TrainedModel {
    /// Loads a `train` output onto `device` (a plain device: inference mode).
    pub fn load(train_output: &Path, device: &Device) -> Result<Self, StageError> {
        let spec: ModelSpec = read_json(&train_output.join("model.json"))?;
        let history: History = read_json(&train_output.join("history.json"))?;
        let weights = train_output.join("model");
        let context = || format!("loading `{}`", train_output.join("model.bpk").display());
        let net = match (spec.architecture.family(), &spec.embedding) {
            (Family::Head(head), Some(input)) => TrainedNet::Head(
                crate::noise::initialise(device, 0, || {
                    HeadNet::new(head, &spec, input.dim, device)
                })
                .try_load_file(&weights)
                .during(context())?,
            ),
            (Family::Head(_), None) => {
                return Err(StageError::invalid(format!(
                    "`{}` describes a head without its embedding input",
                    train_output.join("model.json").display()
                )));
            }
            (Family::Images(network), _) => TrainedNet::Images(
                crate::noise::initialise(device, 0, || {
                    PosterNet::new(network, &spec, None, device)
                })
                .try_load_file(&weights)
                .during(context())?,
            ),
        };
        Ok(Self { net, spec, history })
    }

    /// Probabilities on `split` (`train`, `val`, `test`) of `data`, the kind of output the model
    /// was trained on (`split` for image networks, `embed` for heads).
    pub fn predict_split(
        &self,
        data: &Path,
        split: &str,
        device: &Device,
    ) -> Result<Scored, StageError> {
        let dir = data.join(split);
        let genres = self.spec.genres.len();
        match &self.net {
            TrainedNet::Head(head) => {
                let (meta, rows) = load_embeddings(&dir)?;
                self.check_genres(&meta.genres, &dir)?;
                let mut probs = Vec::with_capacity(rows.len() * genres);
                let dim = self.spec.embedding.as_ref().expect("checked at load").dim;
                for chunk in rows.embeddings.chunks(1024 * dim) {
                    probs.extend(self.head_probabilities(head, chunk.to_vec(), device)?);
                }
                Ok(Scored {
                    ids: rows.ids,
                    posters: rows.posters,
                    labels: rows.labels,
                    probs,
                })
            }
            TrainedNet::Images(net) => {
                if is_embedding_dir(&dir) {
                    return Err(StageError::invalid(format!(
                        "`{}` holds embeddings, but `{}` reads images: bind its data to a `split` output",
                        dir.display(),
                        self.spec.architecture.name()
                    )));
                }
                let meta = ShardMeta::load(&dir)?;
                self.check_genres(&meta.genres, &dir)?;
                let (h, w) = (self.spec.height, self.spec.width);
                if (meta.width, meta.height) != (w, h) {
                    return Err(StageError::invalid(format!(
                        "`{}` holds {}x{} images; the model was trained on {w}x{h}",
                        dir.display(),
                        meta.width,
                        meta.height
                    )));
                }
                let mut scored = Scored::default();
                // One shard at a time: memory stays at a shard of pixels.
                for path in meta.paths(&dir) {
                    let shard = stage_shards::read_shard(&path, meta.pixels(), genres)?;
                    let pixels = w * h * 3;
                    for start in (0..shard.len()).step_by(64) {
                        let end = (start + 64).min(shard.len());
                        scored.probs.extend(self.image_probabilities(
                            net,
                            &shard.images[start * pixels..end * pixels],
                            end - start,
                            device,
                        )?);
                    }
                    scored.ids.extend(shard.ids);
                    scored.posters.extend(shard.posters);
                    scored.labels.extend(shard.labels);
                }
                Ok(scored)
            }
        }
    }

    /// Probabilities `[n, genres]` of `n` embeddings as the backbone gave them (`[n, dim]`):
    /// standardised as in training, then the head and a sigmoid.
    fn head_probabilities(
        &self,
        head: &HeadNet,
        mut embeddings: Vec<f32>,
        device: &Device,
    ) -> Result<Vec<f32>, StageError> {
        let input = self.spec.embedding.as_ref().expect("checked at load");
        input.standardize.apply(&mut embeddings);
        let n = embeddings.len() / input.dim.max(1);
        let x = Tensor::<2>::from_data(TensorData::new(embeddings, [n, input.dim]), device);
        sigmoid(head.forward(x))
            .try_into_vec_as::<f32>()
            .during("reading predictions")
    }

    /// Probabilities `[n, genres]` of `n` resized posters (`[n, height, width, 3]` u8).
    fn image_probabilities(
        &self,
        net: &PosterNet,
        pixels: &[u8],
        n: usize,
        device: &Device,
    ) -> Result<Vec<f32>, StageError> {
        let (h, w) = (self.spec.height, self.spec.width);
        let x = image_input(net.architecture(), pixels, n, h, w, device);
        sigmoid(net.forward(x))
            .try_into_vec_as::<f32>()
            .during("reading predictions")
    }

    /// Probabilities of one poster as `predict` sees it: `pixels` resized to the model's input
    /// (`[height, width, 3]` u8) for an image network, or `embedding` (the backbone's output for
    /// those pixels) for a head. The same calls as [`Self::predict_split`] makes per batch.
    pub fn poster_probabilities(
        &self,
        pixels: &[u8],
        embedding: Option<Vec<f32>>,
        device: &Device,
    ) -> Result<Vec<f32>, StageError> {
        match (&self.net, embedding) {
            (TrainedNet::Images(net), _) => self.image_probabilities(net, pixels, 1, device),
            (TrainedNet::Head(head), Some(embedding)) => {
                self.head_probabilities(head, embedding, device)
            }
            (TrainedNet::Head(_), None) => Err(StageError::invalid(
                "a head needs the backbone's embedding of the poster",
            )),
        }
    }

    /// Writes the weights as SafeTensors for other tools (Python `safetensors`, PyTorch), with
    /// what it takes to use them in the metadata: `layout` (`pytorch`), `architecture`, `genres` (JSON, output order),
    /// `width` and `height`, `decision_rule`, `thresholds` (JSON, per genre; `null` under
    /// `top-k`), `top_k`, and for heads `backbone`, `embedding_dim` and `standardize` (JSON
    /// mean and std per dimension).
    pub fn export_safetensors(&self, path: &Path) -> Result<(), StageError> {
        let spec = &self.spec;
        let decision = spec.decision.as_ref();
        // PyTorch's names and layout (Linear weights `[out, in]`, norms' `weight`/`bias`, no
        // enum variant in the path), so `model.load_state_dict` of the same network takes them.
        let mut store = SafetensorsStore::from_file(path)
            .overwrite(true)
            .skip_enum_variants(true)
            .with_to_adapter(BurnToPyTorchAdapter)
            .metadata("layout", "pytorch")
            .metadata("architecture", spec.architecture.name())
            .metadata("genres", json(&spec.genres))
            .metadata("width", spec.width.to_string())
            .metadata("height", spec.height.to_string())
            .metadata(
                "decision_rule",
                decision.map_or("none".into(), |d| d.rule.name().to_string()),
            )
            .metadata(
                "thresholds",
                json(
                    &decision
                        .filter(|d| d.top_k.is_none())
                        .map(|d| d.thresholds.clone()),
                ),
            )
            .metadata("top_k", json(&decision.and_then(|d| d.top_k)));
        if let Some(input) = &spec.embedding {
            store = store
                .metadata("backbone", input.backbone.clone())
                .metadata("embedding_dim", input.dim.to_string())
                .metadata("standardize", json(&input.standardize));
        }
        let context = || format!("writing `{}`", path.display());
        match &self.net {
            TrainedNet::Head(net) => net.save_into(&mut store).during(context())?,
            TrainedNet::Images(net) => net.save_into(&mut store).during(context())?,
        }
        sort_safetensors_header(path)
    }

    fn check_genres(&self, genres: &[String], dir: &Path) -> Result<(), StageError> {
        if genres != self.spec.genres.as_slice() {
            return Err(StageError::invalid(format!(
                "`{}` has other genres than the model was trained on",
                dir.display()
            )));
        }
        Ok(())
    }
}

/// The labels `[rows, genres]` of `split` in a `split` or `embed` output, without pixels or vectors
/// kept in memory.
pub fn split_labels(data: &Path, split: &str) -> Result<(Vec<String>, Vec<u8>), StageError> {
    let dir = data.join(split);
    let mut labels = Vec::new();
    if is_embedding_dir(&dir) {
        let meta = EmbeddingMeta::load(&dir)?;
        for path in meta.paths(&dir) {
            labels.extend(read_embedding_labels(&path, meta.genres.len())?);
        }
        Ok((meta.genres, labels))
    } else {
        let meta = ShardMeta::load(&dir)?;
        for path in meta.paths(&dir) {
            labels.extend(read_shard_labels(&path, meta.genres.len())?.labels);
        }
        Ok((meta.genres, labels))
    }
}

/// Rewrites a SafeTensors file's JSON header with its keys in sorted order. Burn hands the
/// metadata to `safetensors` as a `HashMap`, whose order changes from run to run, and the output
/// of `train` must be the same bytes for the same inputs (or everything downstream reruns).
/// Tensor offsets count from the end of the header, so only the header changes.
fn sort_safetensors_header(path: &Path) -> Result<(), StageError> {
    let bytes = read_file(path)?;
    let malformed = || StageError::invalid(format!("`{}` is not SafeTensors", path.display()));
    let length: [u8; 8] = bytes
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(malformed)?;
    let header_end = usize::try_from(u64::from_le_bytes(length))
        .ok()
        .and_then(|n| n.checked_add(8))
        .filter(|&end| end <= bytes.len())
        .ok_or_else(malformed)?;
    let mut header: BTreeMap<String, serde_json::Value> =
        serde_json::from_slice(&bytes[8..header_end])
            .during(format!("reading `{}`", path.display()))?;
    if let Some(metadata) = header.get_mut("__metadata__") {
        let sorted: BTreeMap<String, serde_json::Value> =
            serde_json::from_value(metadata.take()).during("sorting SafeTensors metadata")?;
        *metadata = serde_json::to_value(sorted).during("sorting SafeTensors metadata")?;
    }
    let mut text = serde_json::to_vec(&header).during("sorting SafeTensors metadata")?;
    // The format pads the header with spaces to a multiple of 8, keeping the data aligned.
    text.resize(text.len().next_multiple_of(8), b' ');
    let mut out = Vec::with_capacity(8 + text.len() + bytes.len() - header_end);
    out.extend_from_slice(&(text.len() as u64).to_le_bytes());
    out.extend_from_slice(&text);
    out.extend_from_slice(&bytes[header_end..]);
    write_file(path, out)
}

/// A metadata value as JSON text.
fn json(value: &impl serde::Serialize) -> String {
    serde_json::to_string(value).expect("metadata serialises")
}
