//! Fitting one poster into a model's input size: decode (with the pipeline's limits) and resize
//! by the params' `mode`. What `resize`, `embed` and `pipeline predict` all do to a poster.

use std::cell::RefCell;
use std::path::Path;

use fast_image_resize::images::Image;
use fast_image_resize::{FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer};
use stage_shards::poster::decode_rgb;

use crate::params::{Mode, ResizeParams};

/// Decodes one poster and fits it into `dst` (`width * height * 3` values; RGB, HWC).
pub fn load_resized_into(path: &Path, params: &ResizeParams, dst: &mut [u8]) -> Result<(), String> {
    let bytes = std::fs::read(path).map_err(|e| format!("unreadable: {e}"))?;
    fit_bytes_into(&bytes, params, dst)
}

/// Decodes poster bytes (with the pipeline's limits) and fits them into `dst`.
pub fn fit_bytes_into(bytes: &[u8], params: &ResizeParams, dst: &mut [u8]) -> Result<(), String> {
    let rgb = decode_rgb(bytes).map_err(|e| format!("broken poster: {e}"))?;
    resize_into(rgb.width(), rgb.height(), rgb.into_raw(), params, dst)
}

thread_local! {
    /// One resizer per worker thread: it keeps its scratch buffers between posters.
    static RESIZER: RefCell<Resizer> = RefCell::new(Resizer::new());
}

/// Resizes packed RGB pixels according to `params.mode` into `dst`.
pub fn resize_into(
    width: u32,
    height: u32,
    rgb: Vec<u8>,
    params: &ResizeParams,
    dst: &mut [u8],
) -> Result<(), String> {
    let src = Image::from_vec_u8(width, height, rgb, PixelType::U8x3).map_err(|e| e.to_string())?;
    let alg = ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::Bilinear));
    RESIZER.with(|resizer| {
        let mut resizer = resizer.borrow_mut();
        fit(&mut resizer, &src, params, &alg, dst)
    })
}

fn fit(
    resizer: &mut Resizer,
    src: &Image<'_>,
    params: &ResizeParams,
    alg: &ResizeOptions,
    dst: &mut [u8],
) -> Result<(), String> {
    let (width, height) = (src.width(), src.height());
    match params.mode {
        Mode::Stretch | Mode::Crop => {
            let options = if params.mode == Mode::Crop {
                alg.fit_into_destination(Some((0.5, 0.5)))
            } else {
                *alg
            };
            let mut dst = Image::from_slice_u8(params.width, params.height, dst, PixelType::U8x3)
                .map_err(|e| e.to_string())?;
            resizer
                .resize(src, &mut dst, &options)
                .map_err(|e| e.to_string())
        }
        Mode::Pad => {
            let scale = f64::min(
                params.width as f64 / width as f64,
                params.height as f64 / height as f64,
            );
            let inner_w = ((width as f64 * scale).round() as u32).clamp(1, params.width);
            let inner_h = ((height as f64 * scale).round() as u32).clamp(1, params.height);
            let mut inner = Image::new(inner_w, inner_h, PixelType::U8x3);
            resizer
                .resize(src, &mut inner, alg)
                .map_err(|e| e.to_string())?;
            dst.fill(0);
            let (x0, y0) = ((params.width - inner_w) / 2, (params.height - inner_h) / 2);
            let row = (inner_w * 3) as usize;
            for (y, src_row) in inner.buffer().chunks_exact(row).enumerate() {
                let at = (((y0 as usize + y) * params.width as usize) + x0 as usize) * 3;
                dst[at..at + row].copy_from_slice(src_row);
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resize_rgb(width: u32, height: u32, rgb: Vec<u8>, params: &ResizeParams) -> Vec<u8> {
        let mut out = vec![0u8; (params.width * params.height * 3) as usize];
        resize_into(width, height, rgb, params, &mut out).unwrap();
        out
    }

    fn params(mode: Mode) -> ResizeParams {
        ResizeParams {
            width: 4,
            height: 4,
            mode,
            shard_rows: 8,
        }
    }

    #[test]
    fn every_mode_produces_the_target_size() {
        let rgb = vec![200u8; 8 * 2 * 3];
        for mode in [Mode::Stretch, Mode::Pad, Mode::Crop] {
            let out = resize_rgb(8, 2, rgb.clone(), &params(mode));
            assert_eq!(out.len(), 4 * 4 * 3, "{mode:?}");
        }
    }

    #[test]
    fn pad_leaves_black_bars_and_stretch_does_not() {
        let rgb = vec![200u8; 8 * 2 * 3];
        let padded = resize_rgb(8, 2, rgb.clone(), &params(Mode::Pad));
        // 8x2 scaled by 0.5 is 4x1, centred on row 1 of 4; rows 0, 2 and 3 are padding.
        assert!(padded[..12].iter().all(|&v| v == 0), "row 0 is padding");
        assert!(padded[12..24].iter().all(|&v| v > 150), "row 1 is image");
        assert!(padded[24..].iter().all(|&v| v == 0), "rows 2-3 are padding");
        let stretched = resize_rgb(8, 2, rgb, &params(Mode::Stretch));
        assert!(stretched.iter().all(|&v| v > 150));
    }
}
