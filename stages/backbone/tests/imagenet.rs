//! The imported weights classify photos whose ImageNet class is unambiguous, and give PyTorch's
//! logits on the same input: a wrong key mapping fails the load, and a wrong padding, layer order or
//! normalisation moves the answers.

use std::path::{Path, PathBuf};

use burn::prelude::*;
use burn::tensor::activation::softmax;
use stage_backbone::{EfficientNetLite, FrozenLite, Variant, images_to_input, load};

/// The shipped checkpoint of `variant`.
fn weights_of(variant: Variant) -> PathBuf {
    let file = match variant {
        Variant::Lite0 => "efficientnet-lite0-57934424.pth",
        Variant::Lite2 => "efficientnet-lite2-9656183e.pth",
    };
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../models")
        .join(variant.name())
        .join(file)
}

fn weights() -> PathBuf {
    weights_of(Variant::Lite0)
}

/// ImageNet evaluation preprocessing: shorter side to `size` / 0.875, centre crop `size` square.
fn photo_at(name: &str, size: u32) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/images")
        .join(name);
    let img = image::open(path).unwrap().to_rgb8();
    let (w, h) = img.dimensions();
    let short = (size as f32 / 0.875).round() as u32;
    let (nw, nh) = if w < h {
        (short, h * short / w)
    } else {
        (w * short / h, short)
    };
    let resized = image::imageops::resize(&img, nw, nh, image::imageops::FilterType::Triangle);
    image::imageops::crop_imm(&resized, (nw - size) / 2, (nh - size) / 2, size, size)
        .to_image()
        .into_raw()
}

fn photo(name: &str) -> Vec<u8> {
    photo_at(name, 224)
}

fn top5(net: &EfficientNetLite, pixels: &[u8], size: usize, device: &Device) -> Vec<(usize, f32)> {
    let x = images_to_input(pixels, 1, size, size, device);
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
    let net = load(&weights(), Variant::Lite0, &device).expect("the shipped checkpoint loads");
    let daisy = top5(&net, &photo("flower.jpg"), 224, &device);
    assert_eq!(daisy[0].0, 985, "flower.jpg is a daisy: {daisy:?}");
    // Measured 0.283 with (x - 127) / 128; ImageNet mean/std normalisation gives 0.089.
    assert!(daisy[0].1 > 0.2, "daisy is confident: {daisy:?}");
    let palace = top5(&net, &photo("china.jpg"), 224, &device);
    assert_eq!(palace[0].0, 698, "china.jpg is a palace: {palace:?}");

    // The features are what `embed` stores: 1,280 values after ReLU6 and pooling.
    let x = images_to_input(&photo("flower.jpg"), 1, 224, 224, &device);
    let features: Vec<f32> = net.features(x).try_into_vec_as::<f32>().unwrap();
    assert_eq!(features.len(), stage_backbone::FEATURE_DIM);
    assert!(features.iter().all(|v| (0.0..=6.0).contains(v)));

    // With the batch norms folded into the convs (what `embed` runs), the same features.
    let x = images_to_input(&photo("flower.jpg"), 1, 224, 224, &device);
    let worst = folding_difference(&net, x);
    assert!(worst < 1e-3, "folded features differ by up to {worst}");
}

/// The largest difference between `net`'s features of `x` and those of its folded copy.
fn folding_difference(net: &EfficientNetLite, x: Tensor<4>) -> f32 {
    let features: Vec<f32> = net.features(x.clone()).try_into_vec_as::<f32>().unwrap();
    let folded: Vec<f32> = FrozenLite::new(net)
        .features(x)
        .try_into_vec_as::<f32>()
        .unwrap();
    assert_eq!(features.len(), stage_backbone::FEATURE_DIM);
    features
        .iter()
        .zip(&folded)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max)
}

/// Lite2 at its own ImageNet size (260) names the palace, and folding the batch norms keeps its
/// features.
#[test]
fn lite2_names_the_imagenet_class_of_an_unambiguous_photo() {
    let device = Device::flex();
    let net = load(&weights_of(Variant::Lite2), Variant::Lite2, &device)
        .expect("the shipped Lite2 checkpoint loads");
    // Lite2 calls scikit-learn's flower.jpg a honeycomb (its 260-pixel crop is filled by the
    // flower's centre; daisy ranks 34th), so only the palace is asserted here. That the graph is
    // right rests on every tensor shape fitting and on the poster benchmark (see the README).
    let palace = top5(&net, &photo_at("china.jpg", 260), 260, &device);
    assert_eq!(palace[0].0, 698, "china.jpg is a palace: {palace:?}");
    assert!(palace[0].1 > 0.3, "palace is confident: {palace:?}");

    let x = images_to_input(&photo_at("flower.jpg", 260), 1, 260, 260, &device);
    let worst = folding_difference(&net, x);
    assert!(worst < 1e-3, "folded features differ by up to {worst}");
}

/// Each checkpoint loads only into its own network, and the error says which network it tried
/// and where the right checkpoint is.
#[test]
fn a_checkpoint_of_the_other_variant_is_refused_naming_both() {
    let device = Device::flex();
    let err = load(&weights(), Variant::Lite2, &device)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("efficientnet-lite0-57934424.pth")
            && err.contains("as efficientnet-lite2 weights")
            && err.contains("models/efficientnet-lite2/"),
        "{err}"
    );
    let err = load(&weights_of(Variant::Lite2), Variant::Lite0, &device)
        .unwrap_err()
        .to_string();
    assert!(err.contains("as efficientnet-lite0 weights"), "{err}");
}

#[test]
fn a_checkpoint_that_is_not_lite0_is_refused_with_its_name() {
    let dir = std::env::temp_dir().join(format!("backbone-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let junk = dir.join("junk.pth");
    std::fs::write(&junk, b"not a pickle").unwrap();
    let err = load(&junk, Variant::Lite0, &Device::flex())
        .unwrap_err()
        .to_string();
    assert!(err.contains("junk.pth"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The input `reference_logits.py` draws: HWC u8 from a formula, no decoder in between.
fn pattern(width: usize, height: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(width * height * 3);
    for y in 0..height {
        for x in 0..width {
            for c in 0..3 {
                out.push(((x * 7 + y * 13 + c * 29 + (x * y) % 17) % 256) as u8);
            }
        }
    }
    out
}

/// Logits agree with PyTorch's on the same graph and weights (`reference-logits.json`, made by
/// `reference_logits.py`), at a square and a non-square size (TF "SAME" padding is asymmetric).
#[test]
fn logits_match_pytorch_on_the_same_input() {
    let reference: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/reference-logits.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let device = Device::flex();
    let net = load(&weights(), Variant::Lite0, &device).unwrap();
    for case in reference["cases"].as_array().unwrap() {
        let (w, h) = (
            case["width"].as_u64().unwrap() as usize,
            case["height"].as_u64().unwrap() as usize,
        );
        let x = images_to_input(&pattern(w, h), 1, h, w, &device);
        let features = net.features(x.clone());
        let feature_sum = features.clone().sum().into_scalar::<f32>() as f64;
        let logits: Vec<f32> = net.imagenet_logits(x).try_into_vec_as::<f32>().unwrap();
        let expected_sum = case["feature_sum"].as_f64().unwrap();
        assert!(
            (feature_sum - expected_sum).abs() < 1e-3 * expected_sum.abs(),
            "{w}x{h}: feature sum {feature_sum} vs PyTorch {expected_sum}"
        );
        for (i, want) in case["logits_first10"]
            .as_array()
            .unwrap()
            .iter()
            .enumerate()
        {
            let want = want.as_f64().unwrap() as f32;
            assert!(
                (logits[i] - want).abs() < 1e-3,
                "{w}x{h}: logit {i} is {} vs PyTorch {want}",
                logits[i]
            );
        }
        let mut order: Vec<usize> = (0..logits.len()).collect();
        order.sort_by(|a, b| logits[*b].total_cmp(&logits[*a]));
        let top5: Vec<u64> = order[..5].iter().map(|&c| c as u64).collect();
        let want: Vec<u64> = case["top5"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap())
            .collect();
        assert_eq!(top5, want, "{w}x{h}: top-5 classes");
    }
}
