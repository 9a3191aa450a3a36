//! Decoding posters with limits, shared by `filter` (is it usable?) and `resize` (use it).

use std::io::Cursor;

/// Largest accepted side, in pixels (real posters are a few hundred).
pub const MAX_SIDE: u32 = 12_000;
/// Largest allocation the decoder may make.
pub const MAX_ALLOC: u64 = 256 * 1024 * 1024;

/// Decodes poster bytes into RGB, or says why they are not a usable image.
///
/// Beyond what the decoder checks, a JPEG must end with its end-of-image marker: the decoder
/// fills a truncated JPEG with grey and reports success, which would store a bad poster as good.
pub fn decode_rgb(bytes: &[u8]) -> Result<image::RgbImage, String> {
    let mut reader = image::ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| e.to_string())?;
    let Some(format) = reader.format() else {
        return Err("not a known image format".into());
    };
    if format == image::ImageFormat::Jpeg && !has_jpeg_end(bytes) {
        return Err("truncated JPEG (no end-of-image marker)".into());
    }
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    limits.max_alloc = Some(MAX_ALLOC);
    reader.limits(limits);
    reader
        .decode()
        .map(|image| image.to_rgb8())
        .map_err(|e| e.to_string())
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
}
