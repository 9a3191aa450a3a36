//! Decoding posters with limits, shared by `filter` (is it usable?) and `resize` (use it).

use std::io::Cursor;

/// Largest accepted side, in pixels (real posters are a few hundred).
pub const MAX_SIDE: u32 = 12_000;
/// Largest allocation the decoder may make.
pub const MAX_ALLOC: u64 = 256 * 1024 * 1024;

/// Decodes poster bytes into RGB, or says why they are not a usable image.
///
/// Accepts JPEG (RGB, grayscale, CMYK), PNG (8 and 16 bit, with or without alpha, palette), GIF
/// (first frame) and WebP; everything becomes 8-bit RGB. The declared size is checked against
/// [`MAX_SIDE`] before any pixel is decoded, so a small file claiming 50,000 x 50,000 pixels is
/// refused without allocating; the decoder also runs under [`MAX_ALLOC`].
///
/// Beyond what the decoder checks, a JPEG must end with its end-of-image marker: the decoder
/// fills a truncated JPEG with grey and reports success, which would store a bad poster as good.
pub fn decode_rgb(bytes: &[u8]) -> Result<image::RgbImage, String> {
    let reader = || {
        image::ImageReader::new(Cursor::new(bytes))
            .with_guessed_format()
            .map_err(|e| e.to_string())
    };
    let Some(format) = reader()?.format() else {
        return Err("not a known image format".into());
    };
    if format == image::ImageFormat::Jpeg && !has_jpeg_end(bytes) {
        return Err("truncated JPEG (no end-of-image marker)".into());
    }
    let (width, height) = reader()?
        .into_dimensions()
        .map_err(|e| format!("unreadable {format:?} header: {e}"))?;
    if width == 0 || height == 0 {
        return Err(format!("empty image ({width}x{height})"));
    }
    if width > MAX_SIDE || height > MAX_SIDE {
        return Err(format!(
            "too large: {width}x{height} pixels declared, over the {MAX_SIDE}-pixel side limit (a decompression bomb?)"
        ));
    }
    // The decoder's own limit counts what it allocates (a grey image is a third of its RGB
    // copy); the RGB image kept is what must fit.
    let rgb_bytes = u64::from(width) * u64::from(height) * 3;
    if rgb_bytes > MAX_ALLOC {
        return Err(format!(
            "too large: {width}x{height} pixels declared, {} MiB as RGB, over the {} MiB limit",
            rgb_bytes >> 20,
            MAX_ALLOC >> 20
        ));
    }
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    limits.max_alloc = Some(MAX_ALLOC);
    let mut reader = reader()?;
    reader.limits(limits);
    reader
        .decode()
        .map(|image| image.into_rgb8())
        .map_err(|e| match e {
            image::ImageError::Limits(_) => format!(
                "over the decoder limits ({MAX_SIDE} px a side, {} MiB): {e}",
                MAX_ALLOC >> 20
            ),
            other => format!("{format:?} does not decode: {other}"),
        })
}

/// What kind of image the bytes start like, or why they are not a poster at all. Cheap (no
/// decoding): `download` uses it so an HTML error page served with status 200, or a JPEG cut short,
/// is recorded as a failure instead of being stored as a poster.
pub fn sniff(bytes: &[u8]) -> Result<&'static str, String> {
    let kind = if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        "jpeg"
    } else if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        "png"
    } else if bytes.starts_with(b"GIF87a") || bytes.starts_with(b"GIF89a") {
        "gif"
    } else if bytes.len() >= 12 && &bytes[..4] == b"RIFF" && &bytes[8..12] == b"WEBP" {
        "webp"
    } else {
        let head = String::from_utf8_lossy(&bytes[..bytes.len().min(16)])
            .trim()
            .to_ascii_lowercase();
        return Err(
            if head.starts_with("<!doctype") || head.starts_with("<html") || head.starts_with('<') {
                "not an image: the server sent HTML".to_string()
            } else if bytes.is_empty() {
                "not an image: empty body".to_string()
            } else {
                "not an image: unknown format".to_string()
            },
        );
    };
    if kind == "jpeg" && !has_jpeg_end(bytes) {
        return Err("truncated JPEG (no end-of-image marker)".into());
    }
    Ok(kind)
}

/// Whether the last JPEG end-of-image marker (`FF D9`) sits at the end, allowing a little padding.
fn has_jpeg_end(bytes: &[u8]) -> bool {
    let tail = &bytes[bytes.len().saturating_sub(64)..];
    tail.windows(2).any(|w| w == [0xFF, 0xD9])
}

/// A valid PNG that declares `width` x `height` but carries one tiny compressed row: the shape of
/// a decompression bomb, for tests of the limits here and in the binary's `predict` tests.
#[doc(hidden)]
pub fn png_claiming(width: u32, height: u32) -> Vec<u8> {
    fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        let start = out.len();
        out.extend_from_slice(kind);
        out.extend_from_slice(data);
        let crc = crc32(&out[start..]);
        out.extend_from_slice(&crc.to_be_bytes());
    }
    fn crc32(bytes: &[u8]) -> u32 {
        let mut crc = !0u32;
        for &b in bytes {
            crc ^= u32::from(b);
            for _ in 0..8 {
                crc = if crc & 1 == 1 {
                    (crc >> 1) ^ 0xEDB8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&width.to_be_bytes());
    ihdr.extend_from_slice(&height.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]); // 8-bit RGB
    chunk(&mut png, b"IHDR", &ihdr);
    // zlib stream of a few zero bytes (stored block): far less than the image needs.
    chunk(
        &mut png,
        b"IDAT",
        &[
            0x78, 0x01, 0x01, 0x04, 0x00, 0xFB, 0xFF, 0, 0, 0, 0, 0, 0, 0, 0,
        ],
    );
    chunk(&mut png, b"IEND", &[]);
    png
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(format: image::ImageFormat) -> Vec<u8> {
        let mut bytes = Vec::new();
        image::RgbImage::from_fn(32, 48, |x, y| image::Rgb([x as u8 * 7, y as u8 * 5, 90]))
            .write_to(&mut Cursor::new(&mut bytes), format)
            .unwrap();
        bytes
    }

    #[test]
    fn whole_images_decode_and_cut_ones_do_not() {
        for format in [image::ImageFormat::Jpeg, image::ImageFormat::Png] {
            let bytes = encoded(format);
            let rgb = decode_rgb(&bytes).unwrap();
            assert_eq!(rgb.dimensions(), (32, 48));
            assert!(decode_rgb(&bytes[..bytes.len() / 2]).is_err(), "{format:?}");
        }
        assert!(decode_rgb(b"<html>not an image</html>").is_err());
    }

    #[test]
    fn sniffing_tells_posters_from_error_pages_and_cut_jpegs() {
        let jpeg = encoded(image::ImageFormat::Jpeg);
        assert_eq!(sniff(&jpeg), Ok("jpeg"));
        assert_eq!(sniff(&encoded(image::ImageFormat::Png)), Ok("png"));
        assert!(
            sniff(&jpeg[..jpeg.len() - 100])
                .unwrap_err()
                .starts_with("truncated JPEG")
        );
        assert_eq!(
            sniff(b"<!DOCTYPE html><html>Access denied</html>").unwrap_err(),
            "not an image: the server sent HTML"
        );
        assert_eq!(sniff(b"").unwrap_err(), "not an image: empty body");
        assert_eq!(
            sniff(b"%PDF-1.4").unwrap_err(),
            "not an image: unknown format"
        );
    }

    fn encode(image: image::DynamicImage, format: image::ImageFormat) -> Vec<u8> {
        let mut bytes = Vec::new();
        image
            .write_to(&mut Cursor::new(&mut bytes), format)
            .unwrap();
        bytes
    }

    #[test]
    fn every_poster_format_decodes_to_rgb() {
        let rgb =
            image::RgbImage::from_fn(16, 24, |x, y| image::Rgb([200, x as u8 * 10, y as u8 * 5]));
        let gray = image::GrayImage::from_fn(16, 24, |x, _| image::Luma([x as u8 * 15]));
        let rgb16 = image::ImageBuffer::<image::Rgb<u16>, Vec<u16>>::from_fn(16, 24, |x, _| {
            image::Rgb([200 * 257, x as u16 * 4000, 0])
        });
        let cases = [
            ("png", encode(rgb.clone().into(), image::ImageFormat::Png)),
            (
                "webp (lossless)",
                encode(rgb.clone().into(), image::ImageFormat::WebP),
            ),
            ("gif", encode(rgb.clone().into(), image::ImageFormat::Gif)),
            (
                "grayscale jpeg",
                encode(gray.clone().into(), image::ImageFormat::Jpeg),
            ),
            ("16-bit png", encode(rgb16.into(), image::ImageFormat::Png)),
            (
                "rgba png",
                encode(
                    image::DynamicImage::ImageRgb8(rgb.clone())
                        .to_rgba8()
                        .into(),
                    image::ImageFormat::Png,
                ),
            ),
        ];
        for (name, bytes) in cases {
            let decoded = decode_rgb(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(decoded.dimensions(), (16, 24), "{name}");
            // The top-left pixel survives the trip (GIF quantises, JPEG is lossy: a tolerance).
            let p = decoded.get_pixel(0, 0).0;
            let want = if name == "grayscale jpeg" {
                [0, 0, 0]
            } else {
                [200, 0, 0]
            };
            let near = p
                .iter()
                .zip(want)
                .all(|(a, b)| (i32::from(*a) - b).abs() <= 24);
            assert!(near, "{name}: top-left pixel {p:?}, want about {want:?}");
        }
    }

    #[test]
    fn cmyk_jpeg_becomes_rgb() {
        // Written by Pillow: a 20x30 CMYK JPEG of (0, 255, 255, 0), which is pure red.
        let bytes = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../tests/fixtures/cmyk-red.jpg"
        ))
        .unwrap();
        let rgb = decode_rgb(&bytes).unwrap();
        assert_eq!(rgb.dimensions(), (20, 30));
        let [r, g, b] = rgb.get_pixel(10, 15).0;
        assert!(
            r > 200 && g < 60 && b < 60,
            "CMYK red decoded as {r},{g},{b}"
        );
    }

    #[test]
    fn tiny_images_decode_and_empty_ones_are_refused() {
        let one = image::RgbImage::from_pixel(1, 1, image::Rgb([1, 2, 3]));
        let rgb = decode_rgb(&encode(one.into(), image::ImageFormat::Png)).unwrap();
        assert_eq!(rgb.get_pixel(0, 0).0, [1, 2, 3]);
        assert!(
            decode_rgb(&png_claiming(0, 5)).is_err(),
            "a 0-pixel-wide image"
        );
    }

    #[test]
    fn a_decompression_bomb_is_refused_before_decoding() {
        let bomb = png_claiming(50_000, 50_000);
        assert!(bomb.len() < 100, "a small file");
        let err = decode_rgb(&bomb).unwrap_err();
        assert!(
            err.starts_with("too large: 50000x50000 pixels declared"),
            "{err}"
        );
        assert!(err.contains("12000-pixel side limit"), "{err}");
        // Inside the side limit but over the allocation limit: the decoder's limits apply.
        let wide = decode_rgb(&png_claiming(11_000, 11_000)).unwrap_err();
        assert!(wide.contains("limit"), "{wide}");
        // 10,000 x 10,000 is refused by its declared size, whatever its colour type.
        let square = decode_rgb(&png_claiming(10_000, 10_000)).unwrap_err();
        assert!(square.contains("286 MiB as RGB"), "{square}");
    }

    #[test]
    fn corrupt_jpeg_data_is_refused_with_a_reason() {
        let mut bytes = encoded(image::ImageFormat::Jpeg);
        // Keep the header and the end marker, scramble the entropy-coded data in between.
        let len = bytes.len();
        for b in &mut bytes[len / 2..len - 2] {
            *b = 0xFF;
        }
        match decode_rgb(&bytes) {
            Err(reason) => assert!(!reason.is_empty()),
            // Some decoders conceal errors; then the image must at least have its declared size.
            Ok(rgb) => assert_eq!(rgb.dimensions(), (32, 48)),
        }
    }

    #[test]
    fn stray_bytes_between_jpeg_headers_are_tolerated() {
        let bytes = encoded(image::ImageFormat::Jpeg);
        // Junk before the second marker segment: libjpeg warns "extraneous bytes", browsers
        // show the image, a strict decoder refuses it. Real posters have it; it must decode.
        let second_marker = 2 + usize::from(u16::from_be_bytes([bytes[4], bytes[5]])) + 2;
        assert_eq!(
            bytes[second_marker], 0xFF,
            "a marker follows the first segment"
        );
        let mut padded = bytes[..second_marker].to_vec();
        padded.extend_from_slice(&[1, 2, 3, 4, 5]);
        padded.extend_from_slice(&bytes[second_marker..]);
        let rgb = decode_rgb(&padded).unwrap();
        assert_eq!(rgb, decode_rgb(&bytes).unwrap());
    }

    #[test]
    fn a_jpeg_claiming_a_huge_size_is_refused_before_decoding() {
        let mut bytes = encoded(image::ImageFormat::Jpeg);
        // Rewrite the frame header (SOF0: FF C0, length, precision, height, width).
        let sof = bytes.windows(2).position(|w| w == [0xFF, 0xC0]).unwrap();
        bytes[sof + 5..sof + 7].copy_from_slice(&50_000u16.to_be_bytes());
        bytes[sof + 7..sof + 9].copy_from_slice(&50_000u16.to_be_bytes());
        let err = decode_rgb(&bytes).unwrap_err();
        assert!(
            err.starts_with("too large: 50000x50000 pixels declared"),
            "{err}"
        );
    }
}
