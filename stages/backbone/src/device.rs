//! The compute device of the model stages (`embed`, `train`, `evaluate`): a runtime knob from
//! `PIPELINE_DEVICE`, never part of a cache key.

use burn::prelude::Device;

/// Why the asked-for device cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct DeviceError(String);

/// The device `PIPELINE_DEVICE` names: `flex` or `cpu` (default, Burn's pure-Rust CPU backend),
/// or with the `tch` feature `cuda` / `torch-cpu` (libtorch). Returns the device and its name for
/// summaries.
pub fn select_device() -> Result<(Device, String), DeviceError> {
    let wanted = std::env::var("PIPELINE_DEVICE").unwrap_or_else(|_| "flex".into());
    match wanted.as_str() {
        "flex" | "cpu" => Ok((Device::flex(), "flex (CPU)".into())),
        #[cfg(feature = "tch")]
        "cuda" => {
            #[allow(deprecated)]
            let device = Device::libtorch_cuda(0);
            Ok((device, "libtorch CUDA:0".into()))
        }
        #[cfg(feature = "tch")]
        "torch-cpu" => {
            #[allow(deprecated)]
            let device = Device::libtorch();
            Ok((device, "libtorch CPU".into()))
        }
        other => Err(DeviceError(format!(
            "unknown PIPELINE_DEVICE `{other}`; this build supports: flex{}",
            if cfg!(feature = "tch") {
                ", cuda, torch-cpu"
            } else {
                " (build with `--features tch` for libtorch)"
            }
        ))),
    }
}

/// Serialises seeding and initialisation: Burn's initialisers draw from one process-wide
/// generator (`burn-flex`'s `SEED`), which a stage initialising beside another one (the engine runs
/// independent stages in parallel) would otherwise advance in between.
static INIT: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// `make()` run alone, with Burn's generator seeded from `seed` first: every network built by the
/// model stages goes through here, so what one draws does not depend on what runs beside it.
pub fn initialise_seeded<N>(device: &Device, seed: u64, make: impl FnOnce() -> N) -> N {
    let _alone = INIT.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    device.seed(seed);
    RUNNING_STATES.set(0);
    make()
}

thread_local! {
    /// Running statistics numbered so far by the network being built on this thread.
    static RUNNING_STATES: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// Where running-statistic ids start, far above any count of parameters.
const RUNNING_STATE_IDS: u64 = 1 << 62;

/// `norm` with its running mean and variance numbered in construction order. Burn gives them
/// random ids, writes the ids into saved weights, and (unlike parameters) a module mapper cannot
/// renumber them; without this two identical trainings would write different files. Build
/// inside [`initialise_seeded`], which restarts the count.
pub fn numbered_running_stats(mut norm: burn::nn::BatchNorm) -> burn::nn::BatchNorm {
    use burn::module::{ParamId, RunningState};
    let n = RUNNING_STATES.get();
    RUNNING_STATES.set(n + 2);
    norm.running_mean = RunningState::with_id(
        ParamId::from(RUNNING_STATE_IDS + n),
        norm.running_mean.value(),
    );
    norm.running_var = RunningState::with_id(
        ParamId::from(RUNNING_STATE_IDS + n + 1),
        norm.running_var.value(),
    );
    norm
}
