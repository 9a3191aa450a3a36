//! ROC and precision-recall curves of one genre's scores, for the report's charts: one point per
//! distinct score, as scikit-learn's `roc_curve` and `precision_recall_curve` (without
//! `drop_intermediate`) place them.

/// Points of a curve, `(x, y)` in drawing order.
pub type Curve = Vec<(f64, f64)>;

/// (true positives, false positives) accumulated down to each distinct score, with the totals
/// of positives and negatives.
struct Counts {
    points: Vec<(usize, usize)>,
    positives: usize,
    negatives: usize,
}

/// Scores sorted high to low, grouped by distinct score. `None` without both classes.
fn thresholds(scored: &[(f32, bool)]) -> Option<Counts> {
    let positives = scored.iter().filter(|(_, t)| *t).count();
    let negatives = scored.len() - positives;
    if positives == 0 || negatives == 0 {
        return None;
    }
    let mut sorted = scored.to_vec();
    sorted.sort_by(|a, b| b.0.total_cmp(&a.0));
    let mut points = Vec::new();
    let (mut tp, mut fp) = (0, 0);
    for (i, (score, truth)) in sorted.iter().enumerate() {
        if *truth {
            tp += 1;
        } else {
            fp += 1;
        }
        if sorted.get(i + 1).is_none_or(|next| next.0 != *score) {
            points.push((tp, fp));
        }
    }
    Some(Counts {
        points,
        positives,
        negatives,
    })
}

/// `(false positive rate, true positive rate)` from (0, 0) to (1, 1).
pub fn roc_curve(scored: &[(f32, bool)]) -> Option<Curve> {
    let Counts {
        points,
        positives: p,
        negatives: n,
    } = thresholds(scored)?;
    let mut curve = vec![(0.0, 0.0)];
    curve.extend(
        points
            .iter()
            .map(|&(tp, fp)| (fp as f64 / n as f64, tp as f64 / p as f64)),
    );
    Some(curve)
}

/// `(recall, precision)` from the highest threshold down, starting at (0, 1).
pub fn pr_curve(scored: &[(f32, bool)]) -> Option<Curve> {
    let Counts {
        points,
        positives: p,
        ..
    } = thresholds(scored)?;
    let mut curve = vec![(0.0, 1.0)];
    curve.extend(
        points
            .iter()
            .map(|&(tp, fp)| (tp as f64 / p as f64, tp as f64 / (tp + fp) as f64)),
    );
    Some(curve)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::roc_auc;

    #[test]
    fn the_roc_curve_encloses_the_roc_auc_and_the_pr_curve_ends_at_the_base_rate() {
        let scored = [
            (0.9, true),
            (0.8, false),
            (0.7, true),
            (0.7, false),
            (0.4, true),
            (0.2, false),
            (0.1, false),
        ];
        let roc = roc_curve(&scored).unwrap();
        assert_eq!(roc.first(), Some(&(0.0, 0.0)));
        assert_eq!(roc.last(), Some(&(1.0, 1.0)));
        let area: f64 = roc
            .windows(2)
            .map(|w| (w[1].0 - w[0].0) * (w[1].1 + w[0].1) / 2.0)
            .sum();
        assert!((area - roc_auc(&scored).unwrap()).abs() < 1e-12, "{area}");
        let pr = pr_curve(&scored).unwrap();
        assert_eq!(pr[1], (1.0 / 3.0, 1.0), "the top score is a hit");
        assert_eq!(
            pr.last(),
            Some(&(1.0, 3.0 / 7.0)),
            "all predicted: the base rate"
        );
        assert!(roc_curve(&[(0.5, true)]).is_none());
    }
}
