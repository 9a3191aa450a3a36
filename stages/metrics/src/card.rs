//! The scorecard of one predictor on one split: every metric `metrics.json` reports (and the
//! micro- and macro-F1 `decision` chooses its rule by), each defined
//! as scikit-learn defines it (`tests/metrics_vs_sklearn.rs` recomputes them all from
//! `predictions.parquet` with scikit-learn and compares to 1e-6).
//!
//! Genres without a positive in the split are *absent*: their recall, F1, ROC-AUC and average
//! precision are `null`, and they are left out of every macro mean (they still count in micro and
//! sample-wise metrics, where a false positive on them is a real error).

use serde::{Deserialize, Serialize};

use crate::scores::{Confusion, roc_auc, samples_f1};

/// Metrics of 0/1 predictions at one operating point (a decision rule, or a 0.5 cut).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Decided {
    /// F1 over every (movie, genre) decision pooled (`f1_score(average="micro")`).
    pub micro_f1: f64,
    /// Mean F1 of the genres present (`average="macro"` over those labels).
    pub macro_f1: f64,
    /// Per-genre F1 weighted by support (`average="weighted"`).
    pub weighted_f1: f64,
    /// Mean over movies of the F1 between true and predicted sets; 1 for a movie with neither
    /// (`average="samples"`, `zero_division=1`).
    pub samples_f1: f64,
    /// Pooled precision.
    pub micro_precision: f64,
    /// Pooled recall.
    pub micro_recall: f64,
    /// Share of (movie, genre) decisions that are wrong (`hamming_loss`).
    pub hamming_loss: f64,
    /// Share of movies whose predicted set is exactly the true one (`accuracy_score`).
    pub subset_accuracy: f64,
    /// Mean genres predicted per movie.
    pub cardinality: f64,
}

/// Threshold-free metrics of the scores.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Ranking {
    /// Mean per-genre ROC-AUC over the genres with both classes in the split.
    pub roc_auc_macro: Option<f64>,
    /// ROC-AUC of every (movie, genre) pair pooled (`roc_auc_score(average="micro")`).
    pub roc_auc_micro: Option<f64>,
    /// Mean average precision over the genres present (mAP).
    pub mean_average_precision: Option<f64>,
}

/// One genre's precision, recall and F1 at an operating point.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct GenreDecided {
    /// Movies predicted to have it.
    pub predicted: usize,
    /// TP / (TP + FP); 0 when nothing was predicted.
    pub precision: f64,
    /// TP / (TP + FN); `null` when the genre is absent.
    pub recall: Option<f64>,
    /// F1; `null` when the genre is absent.
    pub f1: Option<f64>,
}

/// One genre on the split.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct GenreCard {
    /// The genre.
    pub genre: String,
    /// Movies that have it.
    pub support: usize,
    /// ROC-AUC; `null` without both classes.
    pub roc_auc: Option<f64>,
    /// Average precision (`average_precision_score`); `null` when absent.
    pub average_precision: Option<f64>,
    /// At a 0.5 cut.
    pub at_half: GenreDecided,
    /// Under the decision rule chosen on the validation split.
    pub decided: GenreDecided,
}

/// A predictor's whole scorecard on a split.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Scorecard {
    /// Movies scored.
    pub rows: usize,
    /// Mean true genres per movie.
    pub true_cardinality: f64,
    /// Predictions at a 0.5 cut of the scores.
    pub at_half: Decided,
    /// Predictions under the decision rule chosen on the validation split.
    pub decided: Decided,
    /// The scores' ranking quality.
    pub ranking: Ranking,
    /// Per genre, in label order.
    pub per_genre: Vec<GenreCard>,
}

impl Scorecard {
    /// Scores `probs` against `truth` (row-major `[rows, genres]`), with `decided` the 0/1
    /// predictions of the chosen rule; the 0.5 cut is `probs >= 0.5`.
    pub fn new(genres: &[String], truth: &[u8], probs: &[f32], decided: &[u8]) -> Self {
        let n = genres.len().max(1);
        let rows = truth.len() / n;
        let at_half: Vec<u8> = probs.iter().map(|&p| u8::from(p >= 0.5)).collect();
        let columns: Vec<Column> = (0..genres.len())
            .map(|g| Column::new(truth, probs, g, n))
            .collect();
        let per_genre: Vec<GenreCard> = genres
            .iter()
            .zip(&columns)
            .enumerate()
            .map(|(g, (genre, column))| GenreCard {
                genre: genre.clone(),
                support: column.positives,
                roc_auc: roc_auc(&column.scored),
                average_precision: column.average_precision(),
                at_half: GenreDecided::of(Confusion::of_genre(truth, &at_half, g, n)),
                decided: GenreDecided::of(Confusion::of_genre(truth, decided, g, n)),
            })
            .collect();
        let pooled: Vec<(f32, bool)> = probs
            .iter()
            .zip(truth)
            .map(|(&p, &t)| (p, t == 1))
            .collect();
        let ranking = Ranking {
            roc_auc_macro: mean(per_genre.iter().filter_map(|g| g.roc_auc)),
            roc_auc_micro: roc_auc(&pooled),
            mean_average_precision: mean(per_genre.iter().filter_map(|g| g.average_precision)),
        };
        let positives: usize = truth.iter().map(|&t| t as usize).sum();
        Self {
            rows,
            true_cardinality: ratio(positives, rows),
            at_half: Decided::new(truth, &at_half, n),
            decided: Decided::new(truth, decided, n),
            ranking,
            per_genre,
        }
    }
}

/// One genre's column: its (score, is-positive) pairs and positives.
struct Column {
    scored: Vec<(f32, bool)>,
    positives: usize,
}

impl Column {
    fn new(truth: &[u8], probs: &[f32], g: usize, genres: usize) -> Self {
        let scored: Vec<(f32, bool)> = (0..truth.len() / genres)
            .map(|r| (probs[r * genres + g], truth[r * genres + g] == 1))
            .collect();
        let positives = scored.iter().filter(|(_, t)| *t).count();
        Self { scored, positives }
    }

    /// scikit-learn's average precision: the sum over distinct scores, highest first, of
    /// (recall gained) x (precision there); tied scores are one step.
    fn average_precision(&self) -> Option<f64> {
        if self.positives == 0 {
            return None;
        }
        let mut sorted = self.scored.clone();
        sorted.sort_by(|a, b| b.0.total_cmp(&a.0));
        let (mut tp, mut fp, mut recall, mut sum) = (0usize, 0usize, 0.0, 0.0);
        let mut i = 0;
        while i < sorted.len() {
            let mut j = i;
            while j < sorted.len() && sorted[j].0 == sorted[i].0 {
                tp += usize::from(sorted[j].1);
                fp += usize::from(!sorted[j].1);
                j += 1;
            }
            let now = tp as f64 / self.positives as f64;
            sum += (now - recall) * tp as f64 / (tp + fp) as f64;
            recall = now;
            i = j;
        }
        Some(sum)
    }
}

impl GenreDecided {
    fn of(c: Confusion) -> Self {
        let present = c.positives() > 0;
        GenreDecided {
            predicted: c.predicted(),
            precision: ratio(c.tp, c.predicted()),
            recall: present.then(|| ratio(c.tp, c.positives())),
            f1: present.then(|| c.f1()),
        }
    }
}

impl Decided {
    /// The metrics of 0/1 `predicted` against `truth` (row-major `[rows, genres]`).
    pub fn new(truth: &[u8], predicted: &[u8], genres: usize) -> Self {
        let genres = genres.max(1);
        let pooled = Confusion::pooled(truth, predicted);
        let rows = truth.len() / genres;
        // The genres present, each with its support and F1.
        let present: Vec<(usize, f64)> = Confusion::per_genre(truth, predicted, genres)
            .iter()
            .filter(|c| c.positives() > 0)
            .map(|c| (c.positives(), c.f1()))
            .collect();
        let support: usize = present.iter().map(|(s, _)| s).sum();
        let exact = truth
            .chunks(genres)
            .zip(predicted.chunks(genres))
            .filter(|(t, p)| t == p)
            .count();
        Decided {
            micro_f1: pooled.f1(),
            macro_f1: mean(present.iter().map(|(_, f)| *f)).unwrap_or(0.0),
            weighted_f1: if support == 0 {
                0.0
            } else {
                present.iter().map(|(s, f)| *s as f64 * f).sum::<f64>() / support as f64
            },
            samples_f1: mean(samples_f1(truth, predicted, genres)).unwrap_or(0.0),
            micro_precision: ratio(pooled.tp, pooled.predicted()),
            micro_recall: ratio(pooled.tp, pooled.positives()),
            hamming_loss: ratio(pooled.fp + pooled.fn_, truth.len()),
            subset_accuracy: ratio(exact, rows),
            cardinality: ratio(pooled.predicted(), rows),
        }
    }
}

fn ratio(a: usize, b: usize) -> f64 {
    if b == 0 { 0.0 } else { a as f64 / b as f64 }
}

fn mean(values: impl Iterator<Item = f64>) -> Option<f64> {
    let (sum, n) = values.fold((0.0, 0usize), |(s, n), v| (s + v, n + 1));
    (n > 0).then(|| sum / n as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|g| format!("g{g}")).collect()
    }

    #[test]
    fn average_precision_steps_over_distinct_scores_as_scikit_learn_does() {
        // sklearn.metrics.average_precision_score([1, 0, 1, 0], [0.9, 0.8, 0.8, 0.1]) = 0.8333..:
        // at 0.9 P=1 R=0.5; at 0.8 (a tie, one step) P=2/3 R=1.
        let column = Column {
            scored: vec![(0.9, true), (0.8, false), (0.8, true), (0.1, false)],
            positives: 2,
        };
        let ap = column.average_precision().unwrap();
        assert!((ap - (0.5 + 0.5 * 2.0 / 3.0)).abs() < 1e-12, "{ap}");
    }

    #[test]
    fn an_absent_genre_is_null_and_left_out_of_macro_means_but_counts_in_micro() {
        // 2 movies x 2 genres; genre 1 has no positive but is predicted once.
        let truth = [1, 0, 1, 0];
        let probs = [0.9, 0.7, 0.2, 0.1];
        let card = Scorecard::new(&names(2), &truth, &probs, &[1, 1, 1, 0]);
        let absent = &card.per_genre[1];
        assert_eq!(
            (absent.support, absent.roc_auc, absent.average_precision),
            (0, None, None)
        );
        assert_eq!((absent.decided.f1, absent.decided.predicted), (None, 1));
        // Macro: genre 0 alone (tp 2, fp 0) = 1. Micro: tp 2, fp 1 -> 0.8.
        assert_eq!(card.decided.macro_f1, 1.0);
        assert!((card.decided.micro_f1 - 0.8).abs() < 1e-12);
        assert_eq!(card.decided.hamming_loss, 0.25);
        assert_eq!(card.decided.subset_accuracy, 0.5);
        assert_eq!(card.decided.cardinality, 1.5);
        assert_eq!(card.true_cardinality, 1.0);
        // At 0.5: movie 1 gets both (0.9, 0.7), movie 2 nothing.
        assert_eq!(card.at_half.cardinality, 1.0);
        assert_eq!(card.at_half.samples_f1, (2.0 / 3.0 + 0.0) / 2.0);
    }
}
