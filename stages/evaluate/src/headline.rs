//! The headline numbers of a `metrics.json`, named `role.metric` (`primary.micro_f1`,
//! `baseline-prior.macro_f1`), for `pipeline metrics` and the report's comparison with the
//! previous run.
//!
//! Read from JSON rather than [`crate::Metrics`] so that a `metrics.json` written by an older
//! `evaluate` still shows what it has instead of failing to parse.

use serde_json::Value;

use crate::metric_list::{Better, METRICS};

/// The fields shown for the primary model's baselines.
const BASELINE_METRICS: &[&str] = &["micro_f1", "macro_f1", "samples_f1"];

/// One headline number.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct HeadlineMetric {
    /// `primary.micro_f1`.
    pub name: String,
    /// Its value.
    pub value: f64,
    /// Whether a larger value is an improvement (false for losses).
    pub higher_is_better: bool,
}

/// Every headline number `metrics` holds, models first (in their order), then the primary
/// model's baselines. Metrics a file lacks (absent genres, older files) are left out.
pub fn headline(metrics: &Value) -> Vec<HeadlineMetric> {
    let mut out = Vec::new();
    let models = metrics["models"].as_array().cloned().unwrap_or_default();
    for model in &models {
        let role = model["role"].as_str().unwrap_or("model");
        for metric in METRICS.iter().filter(|m| m.headline) {
            if let Some(value) = model["test"]
                .pointer(metric.pointer)
                .and_then(Value::as_f64)
            {
                out.push(HeadlineMetric {
                    name: format!("{role}.{}", metric.key),
                    value,
                    higher_is_better: metric.better != Better::Lower,
                });
            }
        }
    }
    let baselines = models
        .first()
        .and_then(|m| m["baselines"].as_array().cloned())
        .unwrap_or_default();
    for baseline in &baselines {
        let who = baseline["name"].as_str().unwrap_or("constant");
        for name in BASELINE_METRICS {
            let pointer = format!("/test/decided/{name}");
            if let Some(value) = baseline.pointer(&pointer).and_then(Value::as_f64) {
                out.push(HeadlineMetric {
                    name: format!("baseline-{who}.{name}"),
                    value,
                    higher_is_better: true,
                });
            }
        }
    }
    out
}

/// One metric in two runs.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct MetricChange {
    /// `primary.micro_f1`.
    pub name: String,
    /// In the older run, when it has it.
    pub old: Option<f64>,
    /// In the newer run, when it has it.
    pub new: Option<f64>,
    /// `new - old` when both have it.
    pub change: Option<f64>,
    /// Whether a larger value is an improvement.
    pub higher_is_better: bool,
}

/// The headline numbers of two runs side by side, in the newer run's order, then those only
/// the older one has.
pub fn compare(old: &[HeadlineMetric], new: &[HeadlineMetric]) -> Vec<MetricChange> {
    let find =
        |list: &[HeadlineMetric], name: &str| list.iter().find(|m| m.name == name).map(|m| m.value);
    let mut out: Vec<MetricChange> = new
        .iter()
        .map(|m| {
            let old = find(old, &m.name);
            MetricChange {
                name: m.name.clone(),
                old,
                new: Some(m.value),
                change: old.map(|o| m.value - o),
                higher_is_better: m.higher_is_better,
            }
        })
        .collect();
    out.extend(
        old.iter()
            .filter(|m| find(new, &m.name).is_none())
            .map(|m| MetricChange {
                name: m.name.clone(),
                old: Some(m.value),
                new: None,
                change: None,
                higher_is_better: m.higher_is_better,
            }),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metrics(micro: f64, with_auc: bool) -> Value {
        let ranking = if with_auc {
            serde_json::json!({"roc_auc_macro": 0.9, "mean_average_precision": null})
        } else {
            serde_json::json!({})
        };
        serde_json::json!({"models": [{
            "role": "primary",
            "test": {"decided": {"micro_f1": micro, "hamming_loss": 0.1}, "ranking": ranking},
            "baselines": [{"name": "prior", "test": {"decided": {"macro_f1": 0.2}}}]
        }]})
    }

    #[test]
    fn headline_names_roles_and_leaves_out_what_is_absent() {
        let names: Vec<String> = headline(&metrics(0.5, true))
            .into_iter()
            .map(|m| m.name)
            .collect();
        assert_eq!(
            names,
            [
                "primary.micro_f1",
                "primary.hamming_loss",
                "primary.roc_auc_macro",
                "baseline-prior.macro_f1"
            ]
        );
        assert!(headline(&serde_json::json!({"model": {}})).is_empty());
    }

    #[test]
    fn compare_gives_deltas_and_keeps_metrics_one_side_lacks() {
        let old = headline(&metrics(0.5, false));
        let new = headline(&metrics(0.75, true));
        let changes = compare(&old, &new);
        let micro = changes
            .iter()
            .find(|c| c.name == "primary.micro_f1")
            .unwrap();
        assert_eq!(micro.change, Some(0.25));
        let auc = changes
            .iter()
            .find(|c| c.name == "primary.roc_auc_macro")
            .unwrap();
        assert_eq!((auc.old, auc.change), (None, None));
        let reversed = compare(&new, &old);
        let auc = reversed
            .iter()
            .find(|c| c.name == "primary.roc_auc_macro")
            .unwrap();
        assert_eq!((auc.old, auc.new), (Some(0.9), None));
    }
}
