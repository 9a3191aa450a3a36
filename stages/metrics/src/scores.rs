//! The counting every metric is built from, once: the confusion counts of 0/1 predictions (per
//! genre, or pooled), F1 from counts, each movie's F1, ROC-AUC, and the constant baseline; and
//! how scores become 0/1 predictions at per-genre thresholds. The
//! metrics themselves are `card`'s.

/// True and false positives and negatives of 0/1 predictions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Confusion {
    pub tp: usize,
    pub fp: usize,
    pub fn_: usize,
    pub tn: usize,
}

impl Confusion {
    /// Genre `g`'s counts; row-major `[rows, genres]`.
    pub fn of_genre(truth: &[u8], predicted: &[u8], g: usize, genres: usize) -> Self {
        let rows = truth.len() / genres.max(1);
        Self::count((0..rows).map(|r| (truth[r * genres + g], predicted[r * genres + g])))
    }

    /// Every genre's counts, in label order.
    pub fn per_genre(truth: &[u8], predicted: &[u8], genres: usize) -> Vec<Self> {
        (0..genres)
            .map(|g| Self::of_genre(truth, predicted, g, genres))
            .collect()
    }

    /// The counts of every (movie, genre) decision pooled.
    pub fn pooled(truth: &[u8], predicted: &[u8]) -> Self {
        Self::count(truth.iter().copied().zip(predicted.iter().copied()))
    }

    fn count(pairs: impl Iterator<Item = (u8, u8)>) -> Self {
        let mut c = Self::default();
        for (t, p) in pairs {
            match (t == 1, p == 1) {
                (true, true) => c.tp += 1,
                (false, true) => c.fp += 1,
                (true, false) => c.fn_ += 1,
                (false, false) => c.tn += 1,
            }
        }
        c
    }

    /// Movies that have it (or pairs that are positive).
    pub fn positives(&self) -> usize {
        self.tp + self.fn_
    }

    /// Movies predicted to have it.
    pub fn predicted(&self) -> usize {
        self.tp + self.fp
    }

    /// F1; 0 without a true positive.
    pub fn f1(&self) -> f64 {
        f1(self.tp, self.fp, self.fn_)
    }
}

/// 0/1 predictions of `probs` (`[rows, genres]`): each at or above its genre's threshold.
pub fn at_thresholds(probs: &[f32], thresholds: &[f32], genres: usize) -> Vec<u8> {
    probs
        .iter()
        .enumerate()
        .map(|(i, &p)| u8::from(p >= thresholds[i % genres]))
        .collect()
}

/// The constant baseline's 0/1 predictions for `rows` movies: the genres of `set`, always.
pub fn always(set: &[usize], rows: usize, genres: usize) -> Vec<u8> {
    (0..rows)
        .flat_map(|_| (0..genres).map(|g| u8::from(set.contains(&g))))
        .collect()
}

/// F1 from counts; 0 when there are no true positives.
pub fn f1(tp: usize, fp: usize, fn_: usize) -> f64 {
    if tp == 0 {
        0.0
    } else {
        2.0 * tp as f64 / (2 * tp + fp + fn_) as f64
    }
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
    fn confusion_counts_each_pair_once() {
        // 2 movies x 2 genres. Truth: [1,0], [1,1]. Predicted: [1,1], [0,1].
        let truth = [1, 0, 1, 1];
        let predicted = [1, 1, 0, 1];
        let genres = Confusion::per_genre(&truth, &predicted, 2);
        let c = |tp, fp, fn_, tn| Confusion { tp, fp, fn_, tn };
        assert_eq!(genres, [c(1, 0, 1, 0), c(1, 1, 0, 0)]);
        assert_eq!(Confusion::pooled(&truth, &predicted), c(2, 1, 1, 0));
        // micro: tp=2, fp=1, fn=1 -> 4/6
        assert!((Confusion::pooled(&truth, &predicted).f1() - 4.0 / 6.0).abs() < 1e-9);
        // samples: movie 1: 2*1/(1+2)=2/3; movie 2: 2*1/(2+1)=2/3
        assert!(samples_f1(&truth, &predicted, 2).all(|f| (f - 2.0 / 3.0).abs() < 1e-9));
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
