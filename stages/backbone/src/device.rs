//! The compute device of the model stages (`embed`, `train`, `evaluate`): a runtime choice from
//! `pipeline run --device` or `PIPELINE_DEVICE`, never part of a cache key.

use std::sync::OnceLock;

use burn::module::{Module, ModuleVisitor, Param};
use burn::prelude::{Bool, Device, Int, Tensor};

/// Why the asked-for device cannot be used, with the command that fixes it.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct DeviceError(String);

/// The device chosen for this process by [`choose_device`].
static CHOSEN: OnceLock<String> = OnceLock::new();

/// The devices this build can use, for messages.
pub fn supported_devices() -> &'static str {
    if cfg!(feature = "tch") {
        "flex (or cpu), tch-cpu, cuda, cuda:N"
    } else {
        "flex (or cpu)"
    }
}

/// Checks `name` now (so that a run fails at once, not when the first model stage starts) and
/// makes it the device [`select_device`] returns in this process.
pub fn choose_device(name: &str) -> Result<String, DeviceError> {
    let (_, description) = open(name)?;
    let _ = CHOSEN.set(name.to_string());
    Ok(description)
}

/// The device chosen with [`choose_device`], else the one `PIPELINE_DEVICE` names, else flex:
/// the device and its description for summaries.
pub fn select_device() -> Result<(Device, String), DeviceError> {
    let name = CHOSEN
        .get()
        .cloned()
        .or_else(|| std::env::var("PIPELINE_DEVICE").ok())
        .unwrap_or_else(|| "flex".into());
    open(&name)
}

fn open(name: &str) -> Result<(Device, String), DeviceError> {
    match name {
        "flex" | "cpu" => Ok((Device::flex(), "flex (CPU)".into())),
        #[cfg(feature = "tch")]
        "tch-cpu" | "torch-cpu" => {
            #[allow(deprecated)]
            let device = Device::libtorch();
            Ok((device, "libtorch CPU".into()))
        }
        #[cfg(feature = "tch")]
        cuda if cuda == "cuda" || cuda.starts_with("cuda:") => {
            let index: usize = match cuda.strip_prefix("cuda:") {
                None => 0,
                Some(n) => n.parse().map_err(|_| {
                    DeviceError(format!(
                        "`{cuda}`: the device index must be a number, as in `cuda:0`"
                    ))
                })?,
            };
            let count = tch::Cuda::device_count().max(0) as usize;
            if count == 0 {
                return Err(DeviceError(format!(
                    "`{cuda}`: libtorch sees no CUDA device (no NVIDIA driver, or a CPU-only libtorch on LD_LIBRARY_PATH); run with `--device tch-cpu` or `--device flex`, or check `nvidia-smi`"
                )));
            }
            if index >= count {
                return Err(DeviceError(format!(
                    "`{cuda}`: libtorch sees {count} CUDA device(s), cuda:0 to cuda:{}",
                    count - 1
                )));
            }
            crate::cudnn::make_deterministic();
            // Read back from libtorch, so that a summary says what was in force.
            let cudnn = if crate::cudnn::is_deterministic() {
                "deterministic"
            } else {
                "non-deterministic"
            };
            #[allow(deprecated)]
            let device = Device::libtorch_cuda(index);
            Ok((device, format!("libtorch CUDA:{index}, cuDNN {cudnn}")))
        }
        #[cfg(not(feature = "tch"))]
        libtorch
            if matches!(libtorch, "tch-cpu" | "torch-cpu" | "cuda")
                || libtorch.starts_with("cuda:") =>
        {
            Err(DeviceError(format!(
                "device `{libtorch}` needs libtorch, and this binary was built without it; build one with `bash scripts/build-tch.sh` (see README, \"GPU training\"), or use `--device flex`"
            )))
        }
        other => Err(DeviceError(format!(
            "unknown device `{other}`; this build supports: {}",
            supported_devices()
        ))),
    }
}

/// Whether `device` (with autodiff or without) computes on a GPU, where work that a CPU does as
/// cheaply on the host (dropout masks) is done on the device instead.
pub fn is_gpu(device: &Device) -> bool {
    let inner = device.clone().inner();
    #[cfg(feature = "tch")]
    {
        #[allow(deprecated)]
        if inner == Device::libtorch() {
            return false;
        }
    }
    inner != Device::flex()
}

/// Serialises seeding and initialisation: Burn's initialisers draw from one process-wide
/// generator (`burn-flex`'s `SEED`), which a stage initialising beside another one (the engine runs
/// independent stages in parallel) would otherwise advance in between.
static INIT: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// `make()` run alone, with Burn's generator seeded from `seed` first: every network built by the
/// model stages goes through here, so what one draws does not depend on what runs beside it.
///
/// Burn initialises parameters lazily, on first use: every parameter is touched here, while the
/// lock is held, so that no draw is left to happen later, outside it, where it would interleave
/// with another network's (found as two trainings with one seed writing different weights when
/// other trainings ran beside them).
pub fn initialise_seeded<N: Module>(device: &Device, seed: u64, make: impl FnOnce() -> N) -> N {
    let _alone = INIT.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    device.seed(seed);
    RUNNING_STATES.set(0);
    let net = make();
    net.visit(&mut InitialiseNow);
    net
}

/// Touches every parameter, which runs its pending initialiser.
struct InitialiseNow;

impl ModuleVisitor for InitialiseNow {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let _ = param.val();
    }
    fn visit_int<const D: usize>(&mut self, param: &Param<Tensor<D, Int>>) {
        let _ = param.val();
    }
    fn visit_bool<const D: usize>(&mut self, param: &Param<Tensor<D, Bool>>) {
        let _ = param.val();
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_devices_are_not_gpus_with_autodiff_or_without() {
        assert!(!is_gpu(&Device::flex()));
        assert!(!is_gpu(&Device::flex().autodiff()));
        #[cfg(feature = "tch")]
        {
            #[allow(deprecated)]
            let libtorch = Device::libtorch();
            assert!(!is_gpu(&libtorch.clone().autodiff()));
            assert!(!is_gpu(&libtorch));
        }
    }
}
