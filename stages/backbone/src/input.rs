//! Posters as the backbone's input: HWC u8 pixels to normalised NCHW floats.

use burn::prelude::*;

/// `(scale, shift)` of the input the checkpoint was trained on: `x * scale + shift = (x - 127) / 128`.
pub const INPUT_NORMALIZATION: (f32, f32) = (1.0 / 128.0, -127.0 / 128.0);

/// Packs `n` HWC RGB u8 images of `height` x `width` into the backbone's input `[n, 3, h, w]`,
/// normalised as the checkpoint was trained: `(x - 127) / 128`.
pub fn images_to_input(
    pixels: &[u8],
    n: usize,
    height: usize,
    width: usize,
    device: &Device,
) -> Tensor<4> {
    let (scale, shift) = INPUT_NORMALIZATION;
    pixels_to_nchw(pixels, [n, height, width], scale, shift, device)
}

/// `[n, h, w]` HWC RGB u8 images as an NCHW float tensor of `x * scale + shift`, packed on the
/// host by [`pack_planar`] (contiguous, so no permute on the device).
pub fn pixels_to_nchw(
    pixels: &[u8],
    [n, height, width]: [usize; 3],
    scale: f32,
    shift: f32,
    device: &Device,
) -> Tensor<4> {
    let per_image = height * width * 3;
    let mut values = vec![0f32; n * per_image];
    for (image, out) in pixels
        .chunks_exact(per_image)
        .zip(values.chunks_exact_mut(per_image))
    {
        pack_planar(image, scale, shift, out);
    }
    Tensor::<4>::from_data(TensorData::new(values, [n, 3, height, width]), device)
}

/// One HWC RGB u8 image as planar CHW `out` (as many values), each `x * scale + shift`: the one
/// packing that training batches, evaluation, embedding and prediction share.
pub fn pack_planar(pixels: &[u8], scale: f32, shift: f32, out: &mut [f32]) {
    let plane = pixels.len() / 3;
    for (i, px) in pixels.chunks_exact(3).enumerate() {
        out[i] = px[0] as f32 * scale + shift;
        out[plane + i] = px[1] as f32 * scale + shift;
        out[2 * plane + i] = px[2] as f32 * scale + shift;
    }
}
