//! The metrics a model is reported by, listed once: the report's headline table and `pipeline
//! metrics` (with the report's comparison against the previous run) both read [`METRICS`].

use stage_metrics::{Decided, Scorecard};

/// Which way a metric improves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Better {
    /// Larger is better.
    Higher,
    /// Smaller is better (losses).
    Lower,
    /// Neither: recall alone, say, which predicting every genre maximises.
    Neither,
}

/// One metric of a scorecard.
pub struct MetricDef {
    /// Its name in `pipeline metrics` (`micro_f1`).
    pub key: &'static str,
    /// Its label in the report (`micro F1`).
    pub label: &'static str,
    /// Where it sits below a scorecard in `metrics.json`, under the decision rule.
    pub pointer: &'static str,
    /// Its value on a scorecard: under the decision rule, or (`at_half`) at a 0.5 cut.
    pub read: fn(&Scorecard, bool) -> Option<f64>,
    /// Which way it improves.
    pub better: Better,
    /// Whether `pipeline metrics` lists it (the rest only describe a model's predictions).
    pub headline: bool,
}

fn decided(card: &Scorecard, at_half: bool) -> &Decided {
    if at_half {
        &card.at_half
    } else {
        &card.decided
    }
}

/// Every reported metric, in the report's order.
pub const METRICS: &[MetricDef] = &[
    MetricDef {
        key: "micro_f1",
        label: "micro F1",
        pointer: "/decided/micro_f1",
        read: |c, h| Some(decided(c, h).micro_f1),
        better: Better::Higher,
        headline: true,
    },
    MetricDef {
        key: "macro_f1",
        label: "macro F1",
        pointer: "/decided/macro_f1",
        read: |c, h| Some(decided(c, h).macro_f1),
        better: Better::Higher,
        headline: true,
    },
    MetricDef {
        key: "weighted_f1",
        label: "weighted F1",
        pointer: "/decided/weighted_f1",
        read: |c, h| Some(decided(c, h).weighted_f1),
        better: Better::Higher,
        headline: true,
    },
    MetricDef {
        key: "samples_f1",
        label: "samples F1",
        pointer: "/decided/samples_f1",
        read: |c, h| Some(decided(c, h).samples_f1),
        better: Better::Higher,
        headline: true,
    },
    MetricDef {
        key: "micro_precision",
        label: "micro precision",
        pointer: "/decided/micro_precision",
        read: |c, h| Some(decided(c, h).micro_precision),
        better: Better::Neither,
        headline: false,
    },
    MetricDef {
        key: "micro_recall",
        label: "micro recall",
        pointer: "/decided/micro_recall",
        read: |c, h| Some(decided(c, h).micro_recall),
        better: Better::Neither,
        headline: false,
    },
    MetricDef {
        key: "hamming_loss",
        label: "Hamming loss",
        pointer: "/decided/hamming_loss",
        read: |c, h| Some(decided(c, h).hamming_loss),
        better: Better::Lower,
        headline: true,
    },
    MetricDef {
        key: "subset_accuracy",
        label: "subset accuracy",
        pointer: "/decided/subset_accuracy",
        read: |c, h| Some(decided(c, h).subset_accuracy),
        better: Better::Higher,
        headline: true,
    },
    MetricDef {
        key: "genres_per_movie",
        label: "genres per movie",
        pointer: "/decided/cardinality",
        read: |c, h| Some(decided(c, h).cardinality),
        better: Better::Neither,
        headline: false,
    },
    MetricDef {
        key: "roc_auc_macro",
        label: "ROC-AUC (macro)",
        pointer: "/ranking/roc_auc_macro",
        read: |c, _| c.ranking.roc_auc_macro,
        better: Better::Higher,
        headline: true,
    },
    MetricDef {
        key: "roc_auc_micro",
        label: "ROC-AUC (micro)",
        pointer: "/ranking/roc_auc_micro",
        read: |c, _| c.ranking.roc_auc_micro,
        better: Better::Higher,
        headline: true,
    },
    MetricDef {
        key: "map",
        label: "mAP",
        pointer: "/ranking/mean_average_precision",
        read: |c, _| c.ranking.mean_average_precision,
        better: Better::Higher,
        headline: true,
    },
];
