//! The learning-rate schedule: constant, cosine or step decay, after an optional linear warm-up.
//! Set per step, so a warm-up of half an epoch means what it says.

use serde::{Deserialize, Serialize};

/// How the learning rate decays after the warm-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Decay {
    /// `learning_rate` throughout.
    Constant,
    /// Half a cosine from `learning_rate` down to `min_learning_rate` over the remaining steps.
    Cosine,
    /// Multiplied by `gamma` every `step_epochs` epochs.
    Step,
}

/// `schedule:` of `train`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Schedule {
    /// `constant` (default), `cosine` or `step`.
    pub decay: Decay,
    /// Epochs (fractions allowed) over which the rate climbs linearly from near 0, in
    /// [0, epochs).
    pub warmup_epochs: f64,
    /// Where `cosine` ends, in [0, 1).
    pub min_learning_rate: f64,
    /// `step`: epochs between decays (1 to 10,000).
    pub step_epochs: usize,
    /// `step`: the factor of each decay, in (0, 1].
    pub gamma: f64,
}

impl Default for Schedule {
    fn default() -> Self {
        Self {
            decay: Decay::Constant,
            warmup_epochs: 0.0,
            min_learning_rate: 0.0,
            step_epochs: 10,
            gamma: 0.1,
        }
    }
}

impl Schedule {
    /// The first param that is out of range, with why.
    pub fn check(&self, epochs: usize) -> Result<(), (&'static str, String)> {
        if !(self.warmup_epochs >= 0.0 && self.warmup_epochs < epochs as f64) {
            return Err((
                "schedule.warmup_epochs",
                format!("must be in [0, epochs = {epochs})"),
            ));
        }
        if !(self.min_learning_rate >= 0.0 && self.min_learning_rate < 1.0) {
            return Err(("schedule.min_learning_rate", "must be in [0, 1)".into()));
        }
        if !(1..=10_000).contains(&self.step_epochs) {
            return Err(("schedule.step_epochs", "must be from 1 to 10000".into()));
        }
        if !(self.gamma > 0.0 && self.gamma <= 1.0) {
            return Err(("schedule.gamma", "must be in (0, 1]".into()));
        }
        Ok(())
    }

    /// The rate of step `step` (0-based) of `steps_per_epoch * epochs`, from `base`.
    pub fn rate(&self, base: f64, step: usize, steps_per_epoch: usize, epochs: usize) -> f64 {
        let per_epoch = steps_per_epoch.max(1) as f64;
        let total = per_epoch * epochs as f64;
        let warmup = self.warmup_epochs * per_epoch;
        let at = step as f64;
        if at < warmup {
            return base * (at + 1.0) / (warmup + 1.0);
        }
        match self.decay {
            Decay::Constant => base,
            Decay::Cosine => {
                let progress = ((at - warmup) / (total - warmup).max(1.0)).clamp(0.0, 1.0);
                let low = self.min_learning_rate.min(base);
                low + (base - low) * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
            }
            Decay::Step => {
                let epoch = (at / per_epoch) as usize;
                base * self.gamma.powi((epoch / self.step_epochs) as i32)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warmup_climbs_then_cosine_falls_to_the_floor_and_step_decays_by_epochs() {
        let cosine = Schedule {
            decay: Decay::Cosine,
            warmup_epochs: 1.0,
            min_learning_rate: 1e-4,
            ..Schedule::default()
        };
        // 10 steps per epoch, 5 epochs.
        let rate = |s: usize| cosine.rate(1e-2, s, 10, 5);
        assert!(rate(0) < rate(5) && rate(5) < rate(9));
        assert!((rate(10) - 1e-2).abs() < 1e-9, "{}", rate(10));
        assert!(rate(30) < rate(20));
        assert!((rate(49) - 1e-4).abs() < 1e-4);
        let step = Schedule {
            decay: Decay::Step,
            step_epochs: 2,
            gamma: 0.5,
            ..Schedule::default()
        };
        assert_eq!(step.rate(1.0, 19, 10, 5), 1.0);
        assert_eq!(step.rate(1.0, 20, 10, 5), 0.5);
        assert_eq!(step.rate(1.0, 45, 10, 5), 0.25);
        assert_eq!(Schedule::default().rate(3.0, 17, 10, 5), 3.0);
    }
}
