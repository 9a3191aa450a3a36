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
    make()
}
