//! Every random draw of training, on the host and from the training seed: shuffling, dropout
//! masks and augmentation.
//!
//! Burn's own sampler is one process-wide generator (`burn-flex`'s `SEED` mutex), so two stages
//! training side by side would interleave their draws and neither would be reproducible; it is also
//! slow (ChaCha, one value at a time: ~45 % of a linear head's step). Each stream here is derived
//! from `(seed, stream, epoch)` alone, so a run resumed at epoch `k` draws exactly what an
//! uninterrupted one would, with no generator state to save.

use burn::prelude::*;
use rand::seq::SliceRandom;
use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// A deterministic generator: ChaCha8 (`rand_chacha`), whose output for a seed and stream is
/// fixed by its specification, so a saved model's draws never change with a `rand` release.
#[derive(Debug, Clone)]
pub struct Draws(ChaCha8Rng);

/// What a stream of draws is for: each gets its own generator.
#[derive(Debug, Clone, Copy)]
#[repr(u64)]
pub enum Stream {
    /// The order of the training rows.
    Shuffle = 1,
    /// Dropout masks.
    Dropout = 2,
    /// Augmentation of the training images.
    Augment = 3,
}

impl Draws {
    /// A generator seeded with `seed` (for tests and one-off draws).
    pub fn seeded(seed: u64) -> Self {
        Self(ChaCha8Rng::seed_from_u64(seed))
    }

    /// The generator of `stream` in `epoch` (1-based) of a run seeded with `seed`: the seed is
    /// ChaCha's key, `(stream, epoch)` its stream number, so streams never overlap.
    pub fn for_epoch(seed: u64, stream: Stream, epoch: usize) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        rng.set_stream(((stream as u64) << 32) | epoch as u64);
        Self(rng)
    }

    /// The next pseudo-random number.
    pub fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        self.0.random::<f64>()
    }

    /// Uniform in `[low, high)` (`low` when they are equal).
    pub fn uniform(&mut self, low: f64, high: f64) -> f64 {
        low + (high - low) * self.unit()
    }

    /// A uniform permutation (Fisher-Yates, `rand`'s).
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        items.shuffle(&mut self.0);
    }
}

/// Inverted dropout of `x` with drop probability `prob`, its 0 / (1 / keep) mask drawn from `rng`;
/// `None` (inference, validation) passes `x` through.
pub fn dropout<const D: usize>(x: Tensor<D>, prob: f64, rng: Option<&mut Draws>) -> Tensor<D> {
    let Some(rng) = rng else {
        return x;
    };
    if prob <= 0.0 {
        return x;
    }
    let keep = 1.0 - prob;
    let dims = x.dims();
    let threshold = (keep * u64::MAX as f64) as u64;
    let scale = (1.0 / keep) as f32;
    let mask: Vec<f32> = (0..dims.iter().product::<usize>())
        .map(|_| {
            if rng.next_u64() < threshold {
                scale
            } else {
                0.0
            }
        })
        .collect();
    let mask = Tensor::<D>::from_data(TensorData::new(mask, dims), &x.device());
    x * mask
}

/// `make()` run with Burn's generator seeded from `seed`, alone (see
/// [`stage_backbone::initialise_seeded`]), and its parameters numbered in visit order. Burn numbers
/// parameters at random and writes the numbers into saved weights, so without this two identical
/// trainings would write different `model.bpk` files.
pub fn initialise<N: burn::module::Module>(
    device: &Device,
    seed: u64,
    make: impl FnOnce() -> N,
) -> N {
    stage_backbone::initialise_seeded(device, seed, make).map(&mut NumberParams(0))
}

/// Renumbers parameters 1, 2, 3, ... in visit order.
struct NumberParams(u64);

impl burn::module::ModuleMapper for NumberParams {
    fn map_float<const D: usize>(
        &mut self,
        param: burn::module::Param<Tensor<D>>,
    ) -> burn::module::Param<Tensor<D>> {
        self.0 += 1;
        let (_, value, mapper) = param.consume();
        burn::module::Param::from_mapped_value(burn::module::ParamId::from(self.0), value, mapper)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_differ_by_stream_and_epoch_and_repeat_for_the_same_ones() {
        let draw = |stream, epoch| Draws::for_epoch(7, stream, epoch).next_u64();
        assert_eq!(draw(Stream::Shuffle, 3), draw(Stream::Shuffle, 3));
        assert_ne!(draw(Stream::Shuffle, 3), draw(Stream::Shuffle, 4));
        assert_ne!(draw(Stream::Shuffle, 3), draw(Stream::Dropout, 3));
        let unit = Draws::seeded(1).unit();
        assert!((0.0..1.0).contains(&unit));
    }
}
