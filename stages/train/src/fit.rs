//! The training loop every architecture shares: shuffled mini-batches, binary cross-entropy with
//! logits or a focal or asymmetric variant (optionally weighting each genre's positives, PyTorch's
//! `pos_weight`), Adam, AdamW or SGD
//! under a learning-rate schedule, per-epoch validation, early stopping that keeps the best
//! epoch, a checkpoint after every epoch that a killed run resumes from, and `history.json`.

use std::path::Path;
use std::time::Instant;

use burn::module::Module;
use burn::optim::decay::WeightDecayConfig;
use burn::optim::momentum::MomentumConfig;
use burn::optim::{AdamConfig, AdamWConfig, GradientsParams, ModuleOptimizer, SgdConfig};
use burn::prelude::*;
use pipeline_api::{StageContext, StageError};
use serde::Serialize;
use stage_metrics::{Decision, DecisionRule};

use crate::checkpoint::{self, BestEpoch, LoopState};
use crate::history::{EpochRecord, History, Monitor};
use crate::loss::{EpochLoss, bce_on_host, pos_weight_row, sigmoid_on_host, training_loss};
use crate::noise::{Draws, Stream};
use crate::params::{Optimizer, TrainParams};
use crate::task::{Labels, Task};

/// What a fit measured of itself, reported in the run's summary and never in `history.json`
/// (see `history`).
#[derive(Debug, Clone, Default, Serialize)]
pub struct FitTiming {
    /// Seconds of the epochs this attempt ran (a resumed fit counts only its own).
    pub seconds: f64,
    /// Each epoch this attempt ran.
    pub epochs: Vec<EpochTiming>,
}

/// One epoch's clock readings.
#[derive(Debug, Clone, Serialize)]
pub struct EpochTiming {
    /// 1-based epoch.
    pub epoch: usize,
    /// Seconds the epoch took.
    pub seconds: f64,
    /// Of which the training steps (data, forward, backward, update; not validation): what
    /// `bench/train-vs-pytorch.sh` divides the training rows by.
    pub train_seconds: f64,
}

/// What a fit produced: the kept network (a validation copy), its validation probabilities, the
/// decision rule fitted on them and the history.
pub struct Fitted<N> {
    /// The network of the best epoch.
    pub net: N,
    /// Its validation probabilities.
    pub val_probs: Vec<f32>,
    /// The decision rule fitted on them.
    pub decision: Decision,
    /// Per-epoch record.
    pub history: History,
    /// How long it took.
    pub timing: FitTiming,
}

/// The optimiser `params` name.
fn optimizer(params: &TrainParams) -> ModuleOptimizer {
    match params.optimizer {
        Optimizer::Adamw => AdamWConfig::new()
            .with_weight_decay(params.weight_decay as f32)
            .init(),
        Optimizer::Adam => AdamConfig::new()
            .with_weight_decay(
                (params.weight_decay > 0.0)
                    .then(|| WeightDecayConfig::new(params.weight_decay as f32)),
            )
            .init(),
        Optimizer::Sgd => SgdConfig::new()
            .with_momentum(Some(MomentumConfig::new().with_momentum(0.9)))
            .with_weight_decay(
                (params.weight_decay > 0.0)
                    .then(|| WeightDecayConfig::new(params.weight_decay as f32)),
            )
            .init(),
    }
}

/// Trains `net` (on the autodiff device) for up to `params.epochs`, keeping the best epoch.
///
/// After every epoch the state is checkpointed in `checkpoints` (the stage's working area, or a
/// folder of it per ensemble member); a checkpoint found there at the start (left by a run that
/// was killed) is resumed from, and ends with exactly the network an uninterrupted run makes.
pub fn fit<T: Task>(
    task: &T,
    net: T::Net,
    params: &TrainParams,
    labels: &Labels<'_>,
    device_name: &str,
    ctx: &StageContext<'_>,
    checkpoints: &Path,
) -> Result<Fitted<T::Net>, StageError> {
    let started_fit = Instant::now();
    let pos_weight = if params.pos_weight {
        labels.pos_weight()
    } else {
        vec![1.0; labels.genres]
    };
    let rows = task.train_rows();
    let fresh = LoopState::new(History {
        epochs: Vec::new(),
        best_epoch: 0,
        monitor: params.early_stopping.monitor,
        stopped_early: false,
        device: device_name.to_string(),
        train_rows: rows,
        val_rows: labels.val.len() / labels.genres.max(1),
        members: Vec::new(),
    });
    let Loop {
        mut net,
        mut optim,
        mut state,
        mut best_net,
    } = resume(net, fresh, params, device_name, ctx, checkpoints);
    let mut timing = FitTiming::default();
    // On the training device, made at the first step (see `pos_weight_row`).
    let mut weight_row: Option<Tensor<2>> = None;
    ctx.progress.start("train", (rows * params.epochs) as u64);
    ctx.progress.advance((rows * state.epochs_done) as u64);
    let finished = state.history.stopped_early || state.epochs_done >= params.epochs;
    for epoch in (state.epochs_done + 1..=params.epochs).filter(|_| !finished) {
        let started = Instant::now();
        let step = Step {
            params,
            pos_weight: &pos_weight,
            epoch,
            ctx,
        };
        let (trained, train_loss, learning_rate) =
            train_epoch(task, net, &mut optim, &mut state, &mut weight_row, &step)?;
        net = trained;
        let train_seconds = started.elapsed().as_secs_f64();
        let scored = validate(task, &net, params, labels, &pos_weight, train_loss)?;
        ctx.progress.detail(&format!(
            "epoch {epoch}/{}: train loss {train_loss:.4}, val loss {:.4}, val macro-F1 {:.3}, lr {learning_rate:.2e}, {:.1}s",
            params.epochs,
            scored.val_loss,
            scored.val_macro_f1,
            started.elapsed().as_secs_f64()
        ));
        state.history.epochs.push(EpochRecord {
            epoch,
            train_loss,
            val_loss: scored.val_loss,
            val_micro_f1: scored.val_micro_f1,
            val_macro_f1: scored.val_macro_f1,
            learning_rate,
        });
        timing.epochs.push(EpochTiming {
            epoch,
            seconds: started.elapsed().as_secs_f64(),
            train_seconds,
        });
        keep_or_stop(&mut state, &mut best_net, scored, params, epoch);
        state.epochs_done = epoch;
        timing.seconds = started_fit.elapsed().as_secs_f64();
        let best = best_net.as_ref().expect("set at the first epoch");
        checkpoint::save(checkpoints, &state, &net, &optim, best)?;
        if state.history.stopped_early {
            // The bar was sized for every epoch; finish it.
            ctx.progress
                .advance((rows * (params.epochs - epoch)) as u64);
            break;
        }
    }
    let LoopState { history, best, .. } = state;
    let best = best.expect("at least one epoch");
    Ok(Fitted {
        net: best_net.expect("at least one epoch"),
        val_probs: best.val_probs,
        decision: best.decision,
        history,
        timing,
    })
}

/// The loop's moving parts: the network being trained, its optimiser, the state a checkpoint
/// keeps, and the best epoch's network (a validation copy).
struct Loop<N: Module> {
    net: N,
    optim: ModuleOptimizer,
    state: LoopState,
    best_net: Option<N>,
}

/// The loop from the newest usable checkpoint in `checkpoints`, or from `fresh` with `net` when
/// there is none (saying why a checkpoint was passed over).
fn resume<N: Module + Clone>(
    net: N,
    fresh: LoopState,
    params: &TrainParams,
    device_name: &str,
    ctx: &StageContext<'_>,
    checkpoints: &Path,
) -> Loop<N> {
    let (found, discarded) = checkpoint::latest(checkpoints);
    for line in &discarded {
        ctx.progress.note(line);
    }
    let start = |net| Loop {
        net,
        optim: optimizer(params),
        state: fresh.clone(),
        best_net: None,
    };
    let Some(found) = found else {
        return start(net);
    };
    let resumed = found.net(net.clone()).and_then(|resumed| {
        let best = found.best(net.clone())?.valid();
        Ok((resumed, best, found.optimizer(optimizer(params))?))
    });
    match resumed {
        Ok((resumed, best, optim)) if found.state.best.is_some() => {
            ctx.progress.note(&format!(
                "resuming from the checkpoint after epoch {} of {} (best so far: epoch {})",
                found.state.epochs_done, params.epochs, found.state.history.best_epoch
            ));
            let mut state = found.state;
            state.history.device = device_name.to_string();
            Loop {
                net: resumed,
                optim,
                state,
                best_net: Some(best),
            }
        }
        Ok(_) => start(net),
        Err(err) => {
            ctx.progress.note(&format!(
                "ignoring an unreadable checkpoint ({err}); training from the start"
            ));
            start(net)
        }
    }
}

/// What every step of one epoch shares.
struct Step<'a> {
    params: &'a TrainParams,
    pos_weight: &'a [f32],
    /// 1-based.
    epoch: usize,
    ctx: &'a StageContext<'a>,
}

/// One pass over the training batches of an epoch: the updated network, its mean training loss
/// and the last learning rate. The network moves through each optimiser step (an update in
/// place where the backend can).
fn train_epoch<T: Task>(
    task: &T,
    mut net: T::Net,
    optim: &mut ModuleOptimizer,
    state: &mut LoopState,
    weight_row: &mut Option<Tensor<2>>,
    step: &Step<'_>,
) -> Result<(T::Net, f64, f64), StageError> {
    let Step {
        params,
        pos_weight,
        epoch,
        ctx,
    } = *step;
    let steps_per_epoch = task.train_rows().div_ceil(params.batch_size);
    let mut dropout = Draws::for_epoch(params.seed, Stream::Dropout, epoch);
    let mut losses = EpochLoss::new();
    let mut learning_rate = params.learning_rate;
    for batch in task.train_batches(params.seed, epoch) {
        let batch = batch?;
        let n = T::batch_rows(&batch);
        learning_rate = params.schedule.rate(
            params.learning_rate,
            state.steps_done,
            steps_per_epoch,
            params.epochs,
        );
        let (logits, targets) = task.train_step(&net, batch, &mut dropout);
        let weight = weight_row
            .get_or_insert_with(|| pos_weight_row(pos_weight, &logits.device()))
            .clone();
        let loss = training_loss(params, logits, targets, weight);
        losses.push(&loss, n);
        let grads = GradientsParams::from_grads(loss.backward(), &net);
        net = optim.step(learning_rate, net, grads);
        state.steps_done += 1;
        ctx.progress.advance(n as u64);
        if losses.due() {
            let mean = losses.read(epoch)?;
            ctx.progress
                .message(&format!("epoch {epoch}/{} loss {mean:.4}", params.epochs));
        }
    }
    Ok((net, losses.read(epoch)?, learning_rate))
}

/// An epoch's network on the validation split.
struct Scored<N> {
    /// A validation copy of the network.
    net: N,
    val_loss: f64,
    val_probs: Vec<f32>,
    /// The rule fitted on these scores: it scores the epoch, and the kept epoch's is the one
    /// saved with the model.
    decision: Decision,
    val_micro_f1: f64,
    val_macro_f1: f64,
}

/// Scores `net` on the validation split (with no validation rows, the training loss stands in).
fn validate<T: Task>(
    task: &T,
    net: &T::Net,
    params: &TrainParams,
    labels: &Labels<'_>,
    pos_weight: &[f32],
    train_loss: f64,
) -> Result<Scored<T::Net>, StageError> {
    let eval_net = net.valid();
    let logits = task.val_logits(&eval_net)?;
    let (val_loss, probs) = if labels.val.is_empty() {
        (train_loss, Vec::new())
    } else {
        (
            bce_on_host(&logits, labels.val, pos_weight),
            sigmoid_on_host(&logits),
        )
    };
    let decision = decide(params, &probs, labels);
    let chosen = decision
        .candidates
        .iter()
        .find(|c| c.rule == decision.rule)
        .unwrap_or(&decision.baseline);
    let (val_micro_f1, val_macro_f1) = if labels.val.is_empty() {
        (0.0, 0.0)
    } else {
        (chosen.micro_f1, chosen.macro_f1)
    };
    Ok(Scored {
        net: eval_net,
        val_loss,
        val_probs: probs,
        decision,
        val_micro_f1,
        val_macro_f1,
    })
}

/// Keeps the epoch if the monitored value improved, and decides whether patience ran out.
fn keep_or_stop<N: Module>(
    state: &mut LoopState,
    best_net: &mut Option<N>,
    scored: Scored<N>,
    params: &TrainParams,
    epoch: usize,
) {
    // Lower is better for both: the loss, or the negated macro-F1.
    let monitored = match params.early_stopping.monitor {
        Monitor::ValLoss => scored.val_loss,
        Monitor::ValMacroF1 => -scored.val_macro_f1,
    };
    if state.best.as_ref().is_none_or(|b| monitored < b.monitored) {
        state.history.best_epoch = epoch;
        state.best = Some(BestEpoch {
            monitored,
            val_probs: scored.val_probs,
            decision: scored.decision,
        });
        *best_net = Some(scored.net);
        state.since_best = 0;
    } else {
        state.since_best += 1;
        let patience = params.early_stopping.patience;
        if patience > 0 && state.since_best >= patience && epoch < params.epochs {
            state.history.stopped_early = true;
        }
    }
}

/// The decision rule `params.decision` fitted on validation probabilities.
pub fn decide(params: &TrainParams, val_probs: &[f32], labels: &Labels<'_>) -> Decision {
    let rule = if labels.val.is_empty() {
        // Nothing to tune on: one 0.5 cut.
        DecisionRule::Global
    } else {
        params.decision
    };
    Decision::choose(rule, val_probs, labels.val, labels.train, labels.genres)
}
