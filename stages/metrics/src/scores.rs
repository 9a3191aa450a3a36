//! Scores of 0/1 predictions: F1 (micro, macro, samples), per-genre precision/recall/F1, ROC-AUC;
//! and the constant baseline.

use serde::{Deserialize, Serialize};

/// Headline metrics of one predictor.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Headline {
    /// F1 over all (movie, genre) decisions pooled.
    pub micro_f1: f64,
    /// Mean of per-genre F1 over genres with test support.
    pub macro_f1: f64,
    /// Mean over movies of the F1 between predicted and true genre sets.
    pub samples_f1: f64,
    /// Mean per-genre ROC-AUC over genres with both classes in the test split.
    pub roc_auc_macro: f64,
}

/// Per-genre metrics.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct GenreMetrics {
    /// TP / (TP + FP); 0 when nothing was predicted.
    pub precision: f64,
    /// TP / (TP + FN); 0 when there are no positives.
    pub recall: f64,
    /// Harmonic mean of precision and recall.
    pub f1: f64,
    /// Positives in the test split.
    pub support: usize,
    /// ROC-AUC, `null` when the test split lacks positives or negatives.
    pub roc_auc: Option<f64>,
}

/// F1 from counts; 0 when there are no true positives.
pub fn f1(tp: usize, fp: usize, fn_: usize) -> f64 {
    if tp == 0 {
        0.0
    } else {
        2.0 * tp as f64 / (2 * tp + fp + fn_) as f64
    }
}

/// Per-genre metrics of 0/1 `predicted` against `truth`, with `scores` for AUC. Row-major `[rows, genres]`.
pub fn per_genre(
    truth: &[u8],
    predicted: &[u8],
    scores: &[f32],
    genres: usize,
) -> Vec<GenreMetrics> {
    let rows = truth.len() / genres.max(1);
    (0..genres)
        .map(|g| {
            let (mut tp, mut fp, mut fn_) = (0, 0, 0);
            let mut column = Vec::with_capacity(rows);
            for r in 0..rows {
                let (t, p) = (truth[r * genres + g] == 1, predicted[r * genres + g] == 1);
                tp += usize::from(t && p);
                fp += usize::from(!t && p);
                fn_ += usize::from(t && !p);
                column.push((scores[r * genres + g], t));
            }
            GenreMetrics {
                precision: if tp + fp == 0 {
                    0.0
                } else {
                    tp as f64 / (tp + fp) as f64
                },
                recall: if tp + fn_ == 0 {
                    0.0
                } else {
                    tp as f64 / (tp + fn_) as f64
                },
                f1: f1(tp, fp, fn_),
                support: tp + fn_,
                roc_auc: roc_auc(&column),
            }
        })
        .collect()
}

/// Headline metrics from the same inputs as [`per_genre`].
pub fn headline(
    truth: &[u8],
    predicted: &[u8],
    per_genre: &[GenreMetrics],
    genres: usize,
) -> Headline {
    let (tp, fp, fn_) = pooled_counts(truth, predicted);
    let supported: Vec<&GenreMetrics> = per_genre.iter().filter(|m| m.support > 0).collect();
    let macro_f1 = mean(supported.iter().map(|m| m.f1));
    let aucs = per_genre.iter().filter_map(|m| m.roc_auc);
    let samples_f1 = mean(samples_f1(truth, predicted, genres));
    Headline {
        micro_f1: f1(tp, fp, fn_),
        macro_f1,
        samples_f1,
        roc_auc_macro: mean(aucs),
    }
}

/// True positives, false positives and false negatives of every (movie, genre) decision pooled.
pub(crate) fn pooled_counts(truth: &[u8], predicted: &[u8]) -> (usize, usize, usize) {
    let (mut tp, mut fp, mut fn_) = (0, 0, 0);
    for (&t, &p) in truth.iter().zip(predicted) {
        tp += usize::from(t == 1 && p == 1);
        fp += usize::from(t == 0 && p == 1);
        fn_ += usize::from(t == 1 && p == 0);
    }
    (tp, fp, fn_)
}

/// Each movie's F1 between its true and predicted genre sets; 1 for a movie with neither.
pub(crate) fn samples_f1<'a>(
    truth: &'a [u8],
    predicted: &'a [u8],
    genres: usize,
) -> impl Iterator<Item = f64> + 'a {
    truth
        .chunks(genres.max(1))
        .zip(predicted.chunks(genres.max(1)))
        .map(|(t, p)| {
            let both = t
                .iter()
                .zip(p)
                .filter(|(a, b)| **a == 1 && **b == 1)
                .count();
            let sizes = t.iter().chain(p).filter(|v| **v == 1).count();
            if sizes == 0 {
                1.0
            } else {
                2.0 * both as f64 / sizes as f64
            }
        })
}

fn mean(values: impl Iterator<Item = f64>) -> f64 {
    let (sum, n) = values.fold((0.0, 0usize), |(s, n), v| (s + v, n + 1));
    if n == 0 { 0.0 } else { sum / n as f64 }
}

/// ROC-AUC by the rank-sum (Mann-Whitney) formula, ties counted half; `None` without both classes.
pub fn roc_auc(scored: &[(f32, bool)]) -> Option<f64> {
    let positives = scored.iter().filter(|(_, t)| *t).count();
    let negatives = scored.len() - positives;
    if positives == 0 || negatives == 0 {
        return None;
    }
    let mut sorted: Vec<(f32, bool)> = scored.to_vec();
    sorted.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut rank_sum = 0.0;
    let mut i = 0;
    while i < sorted.len() {
        let mut j = i;
        while j < sorted.len() && sorted[j].0 == sorted[i].0 {
            j += 1;
        }
        let average_rank = (i + j + 1) as f64 / 2.0; // ranks are 1-based
        rank_sum += average_rank * sorted[i..j].iter().filter(|(_, t)| *t).count() as f64;
        i = j;
    }
    let p = positives as f64;
    Some((rank_sum - p * (p + 1.0) / 2.0) / (p * negatives as f64))
}

/// The constant baseline: the k most frequent genres of `train_labels` (k = mean genres per
/// movie, rounded, at least 1), and every genre's training frequency (its score, so its ROC-AUC is
/// 0.5).
pub fn baseline(train_labels: &[u8], genres: usize) -> (Vec<usize>, Vec<f32>) {
    let rows = (train_labels.len() / genres.max(1)).max(1);
    let mut counts = vec![0usize; genres];
    for (i, &l) in train_labels.iter().enumerate() {
        counts[i % genres] += l as usize;
    }
    let k = ((counts.iter().sum::<usize>() as f64 / rows as f64).round() as usize)
        .clamp(1, genres.max(1));
    let mut order: Vec<usize> = (0..genres).collect();
    order.sort_by(|a, b| counts[*b].cmp(&counts[*a]).then(a.cmp(b)));
    order.truncate(k);
    order.sort();
    (
        order,
        counts.iter().map(|&c| c as f32 / rows as f32).collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auc_of_perfect_random_and_inverted_rankings() {
        let perfect = [(0.1, false), (0.2, false), (0.8, true), (0.9, true)];
        assert_eq!(roc_auc(&perfect), Some(1.0));
        let inverted = [(0.9, false), (0.8, false), (0.2, true), (0.1, true)];
        assert_eq!(roc_auc(&inverted), Some(0.0));
        let tied = [(0.5, false), (0.5, true)];
        assert_eq!(roc_auc(&tied), Some(0.5));
        assert_eq!(roc_auc(&[(0.5, true)]), None);
    }

    #[test]
    fn f1_variants_match_hand_computation() {
        // 2 movies x 2 genres. Truth: [1,0], [1,1]. Predicted: [1,1], [0,1].
        let truth = [1, 0, 1, 1];
        let predicted = [1, 1, 0, 1];
        let scores = [0.9, 0.6, 0.4, 0.7];
        let genres = per_genre(&truth, &predicted, &scores, 2);
        assert_eq!(genres[0].support, 2);
        assert!((genres[0].precision - 1.0).abs() < 1e-9);
        assert!((genres[0].recall - 0.5).abs() < 1e-9);
        let h = headline(&truth, &predicted, &genres, 2);
        // micro: tp=2, fp=1, fn=1 -> 4/6
        assert!((h.micro_f1 - 4.0 / 6.0).abs() < 1e-9);
        // samples: movie 1: 2*1/(1+2)=2/3; movie 2: 2*1/(2+1)=2/3
        assert!((h.samples_f1 - 2.0 / 3.0).abs() < 1e-9);
        // macro: genre 0 f1 = 2/3, genre 1 f1 = 2*1/(2+1+0) = 2/3
        assert!((h.macro_f1 - 2.0 / 3.0).abs() < 1e-9);
    }

    #[test]
    fn baseline_predicts_the_most_frequent_genres() {
        // 3 genres, 4 movies; genre 2 most frequent, then 0; mean labels per movie = 1.75 -> k = 2.
        let labels = [1, 0, 1, 0, 0, 1, 1, 1, 1, 0, 0, 1];
        let (set, freq) = baseline(&labels, 3);
        assert_eq!(set, [0, 2]);
        assert_eq!(freq, [0.5, 0.25, 1.0]);
    }
}
