//! What `pipeline predict` answers: per poster its genres and probabilities (`--json`), and the
//! same for a person.

use serde::Serialize;
use stage_metrics::Decision;
use stage_resize::Mode;

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

impl Answer {
    /// The answer for `poster` from the model's `probs`, under its `decision`; `pixels` are what
    /// the model (or its backbone) read.
    pub fn scored(
        poster: &str,
        probs: Vec<f32>,
        pixels: &[u8],
        decision: &Decision,
        genres: &[String],
        top: usize,
    ) -> Self {
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
        Answer {
            poster: poster.to_string(),
            genres: order
                .iter()
                .filter(|&&g| predicted[g] == 1)
                .map(|&g| score(g))
                .collect(),
            top: order.iter().take(top).map(|&g| score(g)).collect(),
            input_blake3: blake3::hash(pixels).to_hex().to_string(),
            probabilities: probs,
            error: None,
        }
    }

    /// Why `poster` could not be answered.
    pub fn failed(poster: &str, error: String) -> Self {
        Answer {
            poster: poster.to_string(),
            genres: Vec::new(),
            top: Vec::new(),
            probabilities: Vec::new(),
            input_blake3: String::new(),
            error: Some(error),
        }
    }
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
    if prediction.posters.iter().any(|a| !a.top.is_empty()) {
        out.push_str(&format!(
            "\n(* in a top list: a genre the decision rule `{}` predicts; the others are only probable)",
            m.rule
        ));
    }
    out
}
