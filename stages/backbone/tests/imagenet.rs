//! The imported weights classify photos whose ImageNet class is unambiguous: a wrong key mapping
//! fails the load, and a wrong padding, layer order or normalisation moves the answers.

use std::path::{Path, PathBuf};

use burn::prelude::*;
use burn::tensor::activation::softmax;
use stage_backbone::{EfficientNetLite0, images_to_input, load};

fn weights() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../models/efficientnet-lite0/efficientnet-lite0-57934424.pth")
}

/// ImageNet evaluation preprocessing: shorter side to 224 / 0.875, centre crop 224 x 224.
fn photo(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/images")
        .join(name);
    let img = image::open(path).unwrap().to_rgb8();
    let (w, h) = img.dimensions();
    let short = 256;
    let (nw, nh) = if w < h {
        (short, h * short / w)
    } else {
        (w * short / h, short)
    };
    let resized = image::imageops::resize(&img, nw, nh, image::imageops::FilterType::Triangle);
    image::imageops::crop_imm(&resized, (nw - 224) / 2, (nh - 224) / 2, 224, 224)
        .to_image()
        .into_raw()
}

fn top5(net: &EfficientNetLite0, pixels: &[u8], device: &Device) -> Vec<(usize, f32)> {
    let x = images_to_input(pixels, 1, 224, 224, device);
    let probs: Vec<f32> = softmax(net.imagenet_logits(x), 1)
        .try_into_vec_as::<f32>()
        .unwrap();
    let mut order: Vec<usize> = (0..probs.len()).collect();
    order.sort_by(|a, b| probs[*b].total_cmp(&probs[*a]));
    order[..5].iter().map(|&c| (c, probs[c])).collect()
}

#[test]
fn imported_weights_name_the_imagenet_class_of_unambiguous_photos() {
    let device = Device::flex();
    let net = load(&weights(), &device).expect("the shipped checkpoint loads");
    let daisy = top5(&net, &photo("flower.jpg"), &device);
    assert_eq!(daisy[0].0, 985, "flower.jpg is a daisy: {daisy:?}");
    // Measured 0.283 with (x - 127) / 128; ImageNet mean/std normalisation gives 0.089.
    assert!(daisy[0].1 > 0.2, "daisy is confident: {daisy:?}");
    let palace = top5(&net, &photo("china.jpg"), &device);
    assert_eq!(palace[0].0, 698, "china.jpg is a palace: {palace:?}");

    // The features are what `embed` stores: 1,280 values after ReLU6 and pooling.
    let x = images_to_input(&photo("flower.jpg"), 1, 224, 224, &device);
    let features: Vec<f32> = net.features(x).try_into_vec_as::<f32>().unwrap();
    assert_eq!(features.len(), stage_backbone::FEATURE_DIM);
    assert!(features.iter().all(|v| (0.0..=6.0).contains(v)));
}

#[test]
fn a_checkpoint_that_is_not_lite0_is_refused_with_its_name() {
    let dir = std::env::temp_dir().join(format!("backbone-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let junk = dir.join("junk.pth");
    std::fs::write(&junk, b"not a pickle").unwrap();
    let err = load(&junk, &Device::flex()).unwrap_err().to_string();
    assert!(err.contains("junk.pth"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}
