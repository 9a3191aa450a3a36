//! Decision rules: how a model's per-genre probabilities become a set of genres.
//!
//! Thresholds that maximise each genre's own F1 on the validation split set rare genres near
//! 0.05 and flood the output with false positives, which is how a model can lose to the constant
//! baseline on micro-F1. So the rule is a choice, made on the validation split (never on test) and
//! saved with the model: `auto` scores every rule there and keeps the best macro-F1 among those
//! whose micro-F1 beats the constant baseline's by a margin (`shrunk` trades between the
//! micro-F1 cut and the per-genre cuts with one fitted number).

use serde::{Deserialize, Serialize};

use crate::card::Decided;
use crate::scores::{always, at_thresholds, baseline, f1};

/// Candidate thresholds: 0.01, 0.02, ..., 0.99.
const GRID: usize = 99;

fn grid(t: usize) -> f32 {
    (t + 1) as f32 / 100.0
}

/// Most genres `top-k` considers per movie.
const MAX_K: usize = 5;

/// Passes of coordinate ascent for the micro-F1-optimal cut (it settles in two or three).
const PASSES: usize = 4;

/// How probabilities become genres (`decision:` of `train`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DecisionRule {
    /// Score every other rule on the validation split; keep the best macro-F1 among those whose
    /// micro-F1 beats the constant baseline's by [`MICRO_MARGIN`] (the best micro-F1 when none
    /// does).
    Auto,
    /// Each genre's own threshold, maximising that genre's F1.
    PerGenreF1,
    /// One threshold for every genre, maximising micro-F1.
    Global,
    /// The k most probable genres of each movie, k maximising micro-F1.
    TopK,
    /// Per-genre thresholds maximising micro-F1 jointly (coordinate ascent from the global cut).
    MicroF1,
    /// Each genre's own-F1 threshold shrunk towards the global cut, `global + a * (own -
    /// global)`, with the one `a` in 0, 0.1, ..., 1 that `auto`'s objective ranks first on
    /// validation: one number fitted instead of one a genre, so rare genres with a few
    /// validation positives do not set their cut by chance.
    Shrunk,
}

impl DecisionRule {
    /// The name used in `pipeline.yaml`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::PerGenreF1 => "per-genre-f1",
            Self::Global => "global",
            Self::TopK => "top-k",
            Self::MicroF1 => "micro-f1",
            Self::Shrunk => "shrunk",
        }
    }
}

/// One rule's scores on the validation split.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Candidate {
    /// The rule.
    pub rule: DecisionRule,
    /// Micro-F1 on validation.
    pub micro_f1: f64,
    /// Macro-F1 on validation.
    pub macro_f1: f64,
}

/// A chosen rule with everything needed to apply it (saved in `model.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    /// The rule that runs (never `auto`).
    pub rule: DecisionRule,
    /// What was asked for (`auto` or the rule itself).
    pub requested: DecisionRule,
    /// Per-genre thresholds (`top-k`: empty).
    pub thresholds: Vec<f32>,
    /// Genres per movie under `top-k`.
    pub top_k: Option<usize>,
    /// Why this rule, in a sentence for the report.
    pub why: String,
    /// Every rule's validation scores (just the chosen one unless `auto`).
    pub candidates: Vec<Candidate>,
    /// The constant baseline's validation scores.
    pub baseline: Candidate,
}

impl Decision {
    /// 0/1 predictions for `probs` (`[rows, genres]`).
    pub fn apply(&self, probs: &[f32], genres: usize) -> Vec<u8> {
        match self.top_k {
            Some(k) => top_k(probs, genres, k),
            None => at_thresholds(probs, &self.thresholds, genres),
        }
    }

    /// Chooses the `requested` rule's parameters on validation `probs` against `truth`;
    /// `train_labels` give the constant baseline it must beat (under `auto`).
    pub fn choose(
        requested: DecisionRule,
        probs: &[f32],
        truth: &[u8],
        train_labels: &[u8],
        genres: usize,
    ) -> Self {
        let table = Counts::new(probs, truth, genres);
        let (set, _) = baseline(train_labels, genres);
        let rows = truth.len() / genres.max(1);
        let baseline = score(
            DecisionRule::Global,
            &always(&set, rows, genres),
            truth,
            genres,
        );
        let objective = Objective {
            micro_floor: baseline.micro_f1 + MICRO_MARGIN,
        };
        let fitted = |rule| fit(rule, &table, probs, truth, genres, objective);
        if requested != DecisionRule::Auto {
            let (decision, candidate) = fitted(requested);
            return Self {
                why: format!("`{}` as configured", requested.name()),
                candidates: vec![candidate],
                baseline,
                requested,
                ..decision
            };
        }
        let rules = [
            DecisionRule::MicroF1,
            DecisionRule::Global,
            DecisionRule::TopK,
            DecisionRule::PerGenreF1,
            DecisionRule::Shrunk,
        ];
        let fitted: Vec<(Decision, Candidate)> = rules.iter().map(|&r| fitted(r)).collect();
        let chosen = fitted
            .iter()
            .max_by(|a, b| objective.rank(&a.1).total_cmp(&objective.rank(&b.1)))
            .expect("five rules");
        let why = if chosen.1.micro_f1 >= objective.micro_floor {
            format!(
                "auto: the best macro-F1 on the validation split among the rules whose micro-F1 beats the constant baseline's ({:.3}) by {MICRO_MARGIN} or more",
                baseline.micro_f1
            )
        } else {
            format!(
                "auto: no rule beat the constant baseline's micro-F1 ({:.3}) by {MICRO_MARGIN} on the validation split; the best micro-F1",
                baseline.micro_f1
            )
        };
        Self {
            why,
            candidates: fitted.iter().map(|(_, c)| c.clone()).collect(),
            baseline,
            requested,
            ..chosen.0.clone()
        }
    }
}

fn score(rule: DecisionRule, predicted: &[u8], truth: &[u8], genres: usize) -> Candidate {
    let decided = Decided::new(truth, predicted, genres);
    Candidate {
        rule,
        micro_f1: decided.micro_f1,
        macro_f1: decided.macro_f1,
    }
}

/// How much `auto` wants micro-F1 above the constant baseline's on validation before it trades
/// micro-F1 for macro-F1. Measured on real posters (bench/model-quality.sh): the micro-F1-optimal
/// cuts beat the baseline by about 0.05 on test and every macro-F1 gain costs micro-F1.
const MICRO_MARGIN: f64 = 0.05;

/// What `auto` (and the shrinkage of [`DecisionRule::Shrunk`]) maximise: macro-F1, among the
/// choices whose validation micro-F1 reaches `micro_floor`; below it, micro-F1 alone, so a choice
/// that reaches the floor always outranks one that does not.
#[derive(Debug, Clone, Copy)]
struct Objective {
    micro_floor: f64,
}

impl Objective {
    fn rank(self, c: &Candidate) -> f64 {
        if c.micro_f1 >= self.micro_floor {
            2.0 + c.macro_f1
        } else {
            c.micro_f1
        }
    }
}

fn fit(
    rule: DecisionRule,
    table: &Counts,
    probs: &[f32],
    truth: &[u8],
    genres: usize,
    objective: Objective,
) -> (Decision, Candidate) {
    let (thresholds, top_k) = match rule {
        DecisionRule::PerGenreF1 => ((0..genres).map(|g| table.best_own_f1(g)).collect(), None),
        DecisionRule::Global => (vec![grid(table.best_global()); genres], None),
        DecisionRule::MicroF1 => (table.micro_optimal().into_iter().map(grid).collect(), None),
        DecisionRule::Shrunk => (shrunk(table, probs, truth, genres, objective), None),
        DecisionRule::TopK => {
            let k = (1..=MAX_K.min(genres.max(1)))
                .max_by(|&a, &b| {
                    let score = |k| score(rule, &top_k(probs, genres, k), truth, genres).micro_f1;
                    // Ties go to the smaller k (max_by keeps the last maximum).
                    score(a).total_cmp(&score(b)).then(b.cmp(&a))
                })
                .unwrap_or(1);
            (Vec::new(), Some(k))
        }
        DecisionRule::Auto => unreachable!("auto picks among the other rules"),
    };
    let decision = Decision {
        rule,
        requested: rule,
        thresholds,
        top_k,
        why: String::new(),
        candidates: Vec::new(),
        baseline: Candidate {
            rule,
            micro_f1: 0.0,
            macro_f1: 0.0,
        },
    };
    let candidate = score(rule, &decision.apply(probs, genres), truth, genres);
    (decision, candidate)
}

/// Steps of the shrinkage factor `a` of [`DecisionRule::Shrunk`]: 0, 0.1, ..., 1.
const SHRINK_STEPS: usize = 10;

/// The thresholds of [`DecisionRule::Shrunk`].
fn shrunk(
    table: &Counts,
    probs: &[f32],
    truth: &[u8],
    genres: usize,
    objective: Objective,
) -> Vec<f32> {
    let global = grid(table.best_global());
    let own: Vec<f32> = (0..genres).map(|g| table.best_own_f1(g)).collect();
    let at = |step: usize| -> Vec<f32> {
        let a = step as f32 / SHRINK_STEPS as f32;
        own.iter().map(|&o| global + a * (o - global)).collect()
    };
    let rank = |thresholds: &[f32]| {
        let predicted = at_thresholds(probs, thresholds, genres);
        objective.rank(&score(DecisionRule::Shrunk, &predicted, truth, genres))
    };
    let best = (0..=SHRINK_STEPS)
        .map(|step| (rank(&at(step)), step))
        // Ties go to the smaller step: the fewer fitted cuts.
        .max_by(|a, b| a.0.total_cmp(&b.0).then(b.1.cmp(&a.1)))
        .map_or(0, |(_, step)| step);
    at(best)
}

/// The `k` highest probabilities of each row, as 0/1.
fn top_k(probs: &[f32], genres: usize, k: usize) -> Vec<u8> {
    let mut out = vec![0u8; probs.len()];
    for (row, out) in probs
        .chunks(genres.max(1))
        .zip(out.chunks_mut(genres.max(1)))
    {
        let mut order: Vec<usize> = (0..row.len()).collect();
        order.sort_by(|a, b| row[*b].total_cmp(&row[*a]).then(a.cmp(b)));
        for &g in order.iter().take(k) {
            out[g] = 1;
        }
    }
    out
}

/// Per genre and grid threshold, the true and false positives on the validation split.
struct Counts {
    /// `[genre][threshold] -> (tp, fp)`.
    at: Vec<Vec<(usize, usize)>>,
    /// Positives per genre.
    positives: Vec<usize>,
}

impl Counts {
    fn new(probs: &[f32], truth: &[u8], genres: usize) -> Self {
        let mut at = vec![vec![(0usize, 0usize); GRID]; genres];
        let mut positives = vec![0usize; genres];
        for (i, (&p, &t)) in probs.iter().zip(truth).enumerate() {
            let g = i % genres;
            positives[g] += usize::from(t == 1);
            // Predicted positive at every grid threshold <= p, compared exactly as `apply` does.
            let reached = (0..GRID).take_while(|&t| p >= grid(t)).count();
            for cell in &mut at[g][..reached] {
                if t == 1 {
                    cell.0 += 1;
                } else {
                    cell.1 += 1;
                }
            }
        }
        Self { at, positives }
    }

    fn best_own_f1(&self, g: usize) -> f32 {
        if self.positives[g] == 0 {
            return 0.5;
        }
        let best = (0..GRID)
            .max_by(|&a, &b| {
                let f = |t: usize| {
                    let (tp, fp) = self.at[g][t];
                    f1(tp, fp, self.positives[g] - tp)
                };
                f(a).total_cmp(&f(b)).then(b.cmp(&a))
            })
            .unwrap_or(49);
        grid(best)
    }

    fn micro(&self, choice: &[usize]) -> f64 {
        let (mut tp, mut fp, mut fn_) = (0, 0, 0);
        for (g, &t) in choice.iter().enumerate() {
            let (a, b) = self.at[g][t];
            tp += a;
            fp += b;
            fn_ += self.positives[g] - a;
        }
        f1(tp, fp, fn_)
    }

    fn best_global(&self) -> usize {
        let genres = self.at.len();
        (0..GRID)
            .max_by(|&a, &b| {
                let f = |t| self.micro(&vec![t; genres]);
                f(a).total_cmp(&f(b)).then(b.cmp(&a))
            })
            .unwrap_or(49)
    }

    fn micro_optimal(&self) -> Vec<usize> {
        let mut choice = vec![self.best_global(); self.at.len()];
        for _ in 0..PASSES {
            let mut changed = false;
            for g in 0..choice.len() {
                let mut best = (self.micro(&choice), choice[g]);
                for t in 0..GRID {
                    choice[g] = t;
                    let score = self.micro(&choice);
                    if score > best.0 + 1e-12 {
                        best = (score, t);
                    }
                }
                changed |= best.1 != choice[g];
                choice[g] = best.1;
            }
            if !changed {
                break;
            }
        }
        choice
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two movies x three genres of probabilities and truth.
    fn rows() -> (Vec<f32>, Vec<u8>) {
        (vec![0.9, 0.4, 0.05, 0.2, 0.7, 0.06], vec![1, 0, 0, 0, 1, 0])
    }

    #[test]
    fn top_k_takes_the_most_probable_genres_of_each_movie() {
        let (probs, _) = rows();
        assert_eq!(top_k(&probs, 3, 1), [1, 0, 0, 0, 1, 0]);
        assert_eq!(top_k(&probs, 3, 2), [1, 1, 0, 1, 1, 0]);
    }

    #[test]
    fn every_fixed_rule_separates_a_separable_validation_split() {
        let (probs, truth) = rows();
        for rule in [
            DecisionRule::PerGenreF1,
            DecisionRule::Global,
            DecisionRule::TopK,
            DecisionRule::MicroF1,
            DecisionRule::Shrunk,
        ] {
            let d = Decision::choose(rule, &probs, &truth, &truth, 3);
            assert_eq!(d.rule, rule);
            assert_eq!(d.apply(&probs, 3), truth, "{rule:?}: {d:?}");
            assert_eq!(d.candidates[0].micro_f1, 1.0);
        }
    }

    /// A rare genre whose scores barely separate: its own-F1 threshold drops to the floor and
    /// predicts it everywhere, which the micro-F1 cut does not.
    #[test]
    fn auto_avoids_the_flood_of_low_per_genre_thresholds() {
        let genres = 2;
        let mut probs = Vec::new();
        let mut truth = Vec::new();
        for i in 0..100 {
            let common = i % 2 == 0;
            probs.push(if common { 0.8 } else { 0.3 });
            truth.push(u8::from(common));
            // The rare genre: 10 % positive, scores all around 0.02, positives slightly higher.
            let rare = i % 10 == 0;
            probs.push(if rare {
                0.03
            } else {
                0.02 + (i % 7) as f32 * 0.0015
            });
            truth.push(u8::from(rare));
        }
        let own = Decision::choose(DecisionRule::PerGenreF1, &probs, &truth, &truth, genres);
        let auto = Decision::choose(DecisionRule::Auto, &probs, &truth, &truth, genres);
        assert_eq!(auto.requested, DecisionRule::Auto);
        assert_ne!(auto.rule, DecisionRule::Auto);
        assert_eq!(auto.candidates.len(), 5);
        let micro = |d: &Decision| {
            d.candidates
                .iter()
                .find(|c| c.rule == d.rule)
                .unwrap()
                .micro_f1
        };
        assert!(micro(&auto) >= micro(&own), "{auto:?} vs {own:?}");
        assert!(auto.why.starts_with("auto:"), "{}", auto.why);
    }
}
