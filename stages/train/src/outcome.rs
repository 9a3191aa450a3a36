//! What a training made ([`Trained`]) and the steps both model families take around the loop:
//! the line announcing the training, and fitting then saving the kept network.

use burn::module::Module;
use pipeline_api::{ResultExt, StageContext, StageError};

use crate::fit::{FitTiming, Fitted, fit};
use crate::history::History;
use crate::params::TrainParams;
use crate::spec::ModelSpec;
use crate::task::{Labels, Task, TrainingRun};

/// What a training made: the network's description (with its decision rule), its history, and
/// the clock readings of every fit (one per ensemble member).
pub struct Trained {
    pub spec: ModelSpec,
    pub history: History,
    pub timings: Vec<FitTiming>,
}

pub fn empty_training_split() -> StageError {
    StageError::invalid("the training split is empty; lower `filter.min_genre_count` or add movies")
}

/// Fits `net`, saves the weights of its kept epoch as `model.bpk`, and completes `spec` with
/// the decision rule fitted on that epoch.
pub fn fit_and_save<T: Task>(
    task: &T,
    net: T::Net,
    run: &TrainingRun<'_>,
    labels: &Labels<'_>,
    mut spec: ModelSpec,
) -> Result<Trained, StageError> {
    let ctx = run.ctx;
    let Fitted {
        net,
        decision,
        history,
        timing,
        ..
    } = fit(
        task,
        net,
        run.params,
        labels,
        run.device_name,
        ctx,
        ctx.work_dir,
    )?;
    net.save_file(ctx.out_dir.join("model"))
        .during("saving the model")?;
    spec.decision = Some(decision);
    Ok(Trained {
        spec,
        history,
        timings: vec![timing],
    })
}

/// The line printed as training starts: what is trained, on what, how big.
pub fn announce(
    ctx: &StageContext<'_>,
    spec: &ModelSpec,
    parameters: usize,
    device_name: &str,
    train_rows: usize,
    val_rows: usize,
    params: &TrainParams,
) {
    let augment = if params.augment.is_active() {
        format!(
            ", augment {}",
            serde_json::to_string(&params.augment).unwrap_or_default()
        )
    } else {
        String::new()
    };
    let decay = serde_json::to_value(params.schedule.decay)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default();
    ctx.progress.detail(&format!(
        "{} ({parameters} parameters) on {device_name}: {train_rows} train / {val_rows} val posters, batch {}, up to {} epochs, lr {} ({decay} schedule){augment}",
        spec.describe(),
        params.batch_size,
        params.epochs,
        params.learning_rate,
    ));
}
