//! Every random draw of training, on the host and from the training seed: shuffling, dropout
//! masks and augmentation.
//!
//! Burn's own sampler is one process-wide generator (`burn-flex`'s `SEED` mutex), so two stages
//! training side by side would interleave their draws and neither would be reproducible; it is also
//! slow (ChaCha, one value at a time: ~45 % of a linear head's step). Each stream here is derived
//! from `(seed, stream, epoch)` alone, so a run resumed at epoch `k` draws exactly what an
//! uninterrupted one would, with no generator state to save.

use burn::prelude::*;
use burn::tensor::IntDType;
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

/// Inverted dropout of `x` with drop probability `prob`, its 0 / (1 / keep) mask keyed by one draw
/// from `rng` (see [`DropoutMask`]); `None` (inference, validation) passes `x` through.
pub fn dropout<const D: usize>(x: Tensor<D>, prob: f64, rng: Option<&mut Draws>) -> Tensor<D> {
    let Some(rng) = rng else {
        return x;
    };
    if prob <= 0.0 {
        return x;
    }
    let mask = DropoutMask::new(1.0 - prob, rng.next_u64());
    let device = x.device();
    let mask = if stage_backbone::is_gpu(&device) {
        mask.on_device(x.dims(), &device)
    } else {
        mask.on_host(x.dims(), &device)
    };
    x * mask
}

/// Multiplier and shift of each round of [`DropoutMask::hash`]: odd multipliers below 2^31, so a
/// 32-bit value times one is exact in an i64 tensor.
const ROUNDS: [(u32, u32); 4] = [
    (0x7feb_352d, 15),
    (0x2c1b_3c6d, 13),
    (0x297a_2d39, 16),
    (0x3243_f6a9, 15),
];

/// The mask of one dropout call: element `i` (row-major) is kept, and scaled by `1 / keep`, when
/// `hash(key, i) < keep * 2^32`. A counter-based hash rather than a stream of draws, so that the
/// host (cheap beside a CPU's step) and a GPU (integer tensor ops: a GPU step is far shorter than
/// the time the host needs to make and upload the keras-baseline's 21 million mask values of a
/// 224x224 batch of 32) make the same mask, bit for bit.
#[derive(Debug, Clone, Copy)]
pub struct DropoutMask {
    keep: f64,
    key: u64,
}

impl DropoutMask {
    /// The mask keeping a `keep` fraction, keyed by `key`.
    pub fn new(keep: f64, key: u64) -> Self {
        Self { keep, key }
    }

    /// Elements below this are kept.
    fn threshold(&self) -> u64 {
        ((self.keep.clamp(0.0, 1.0) * 4_294_967_296.0) as u64).min(1 << 32)
    }

    fn scale(&self) -> f32 {
        (1.0 / self.keep) as f32
    }

    /// The 32-bit hash of element `i`: the low half of the key mixed into the index, two rounds
    /// of multiply and xor-shift, the high half, two more rounds.
    fn hash(&self, i: u32) -> u32 {
        let mut x = i ^ self.key as u32;
        for (round, (multiplier, shift)) in ROUNDS.into_iter().enumerate() {
            if round == 2 {
                x ^= (self.key >> 32) as u32;
            }
            x = x.wrapping_mul(multiplier);
            x ^= x >> shift;
        }
        x
    }

    /// The mask computed on the host and sent to `device`.
    pub fn on_host<const D: usize>(&self, dims: [usize; D], device: &Device) -> Tensor<D> {
        let (threshold, scale) = (self.threshold(), self.scale());
        let n: usize = dims.iter().product();
        // Indices past 2^32 (a 16 GiB activation) would wrap, as they do on the device.
        let mask: Vec<f32> = (0..n)
            .map(|i| {
                if u64::from(self.hash(i as u32)) < threshold {
                    scale
                } else {
                    0.0
                }
            })
            .collect();
        Tensor::from_data(TensorData::new(mask, dims), device)
    }

    /// The same mask computed on `device` with i64 tensor ops, every value kept in 32 bits.
    pub fn on_device<const D: usize>(&self, dims: [usize; D], device: &Device) -> Tensor<D> {
        const LOW: i64 = 0xffff_ffff;
        let n: usize = dims.iter().product();
        let mut x = Tensor::<1, Int>::arange(0..n as i64, device)
            .cast(IntDType::I64)
            .bitwise_xor_scalar(i64::from(self.key as u32))
            .bitwise_and_scalar(LOW);
        for (round, (multiplier, shift)) in ROUNDS.into_iter().enumerate() {
            if round == 2 {
                x = x.bitwise_xor_scalar(i64::from((self.key >> 32) as u32));
            }
            x = x.mul_scalar(i64::from(multiplier)).bitwise_and_scalar(LOW);
            x = x
                .clone()
                .bitwise_xor(x.bitwise_right_shift_scalar(i64::from(shift)));
        }
        x.lower_elem(self.threshold() as i64)
            .float()
            .mul_scalar(self.scale())
            .reshape(dims)
    }
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
    // Renumbered inside the lock too: the mapping is where a parameter would otherwise first be
    // used.
    stage_backbone::initialise_seeded(device, seed, || make().map(&mut NumberParams(0)))
}

/// `net` with its parameters numbered 1, 2, 3, ... in visit order, as [`initialise`] numbers
/// them: for a network made from others (an ensemble's merged head), whose parameters Burn
/// numbered at random.
pub fn number_params<N: burn::module::Module>(net: N) -> N {
    net.map(&mut NumberParams(0))
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
    fn dropout_masks_keep_their_fraction_independently_and_host_and_device_agree() {
        let device = Device::flex();
        let values = |t: Tensor<2>| t.try_into_vec_as::<f32>().unwrap();
        let mask = DropoutMask::new(0.75, 0x0123_4567_89ab_cdef);
        let host = values(mask.on_host([1000, 1000], &device));
        let kept: Vec<bool> = host.iter().map(|&v| v > 0.0).collect();
        assert!(
            host.iter()
                .all(|&v| v == 0.0 || v == (1.0f64 / 0.75) as f32)
        );
        let fraction = |k: &[bool]| k.iter().filter(|&&k| k).count() as f64 / k.len() as f64;
        assert!(
            (fraction(&kept) - 0.75).abs() < 0.002,
            "{}",
            fraction(&kept)
        );
        // Neighbours, and the same element under the next key, are kept independently.
        let both: Vec<bool> = kept.windows(2).map(|w| w[0] && w[1]).collect();
        assert!(
            (fraction(&both) - 0.5625).abs() < 0.003,
            "{}",
            fraction(&both)
        );
        let next =
            values(DropoutMask::new(0.75, 0x0123_4567_89ab_cdf0).on_host([1000, 1000], &device));
        let same: Vec<bool> = kept
            .iter()
            .zip(&next)
            .map(|(&a, &b)| a == (b > 0.0))
            .collect();
        assert!(
            (fraction(&same) - 0.625).abs() < 0.003,
            "{}",
            fraction(&same)
        );
        // Bit for bit what the device computes, on the device the tests run on (flex, or
        // libtorch under scripts/build-tch.sh) and on flex.
        for keep in [0.75, 0.5, 0.1] {
            let mask = DropoutMask::new(keep, 0xfeed_f00d_dead_beef);
            let host = values(mask.on_host([64, 4099], &device));
            assert_eq!(
                values(mask.on_device([64, 4099], &device)),
                host,
                "flex, keep {keep}"
            );
            let (chosen, _) = stage_backbone::select_device().unwrap();
            let on_chosen = mask.on_device([64, 4099], &chosen.clone().autodiff());
            assert_eq!(values(on_chosen), host, "{chosen:?}, keep {keep}");
        }
    }

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
