//! The report's poster gallery: test posters with their true and predicted genres, as small JPEG
//! thumbnails embedded in the page (data URIs), so the file stays self-contained.

use std::collections::BTreeMap;
use std::io::Cursor;
use std::path::Path;

use base64::Engine as _;
use maud::{Markup, html};
use stage_shards::poster::decode_rgb;

use crate::metrics::Evaluated;

/// Thumbnail box, in pixels: posters keep their aspect inside it.
const THUMB: (u32, u32) = (96, 140);

/// One test poster as the gallery shows it.
#[derive(Debug, Clone)]
pub struct Card {
    /// Movie id.
    pub id: i64,
    /// Title from the CSV (escaped when rendered).
    pub title: String,
    /// `data:image/jpeg;base64,...`, or `None` when the poster could not be read again.
    pub thumbnail: Option<String>,
    /// True genres.
    pub truth: Vec<String>,
    /// The highest-scored genres: (genre, probability, predicted, true).
    pub top: Vec<(String, f32, bool, bool)>,
    /// Jaccard index of the predicted and true sets (1 when both are empty).
    pub jaccard: f64,
}

/// The three groups of the gallery.
#[derive(Debug, Clone, Default)]
pub struct Gallery {
    /// Predicted sets closest to the truth, most confident first.
    pub best: Vec<Card>,
    /// Furthest from the truth, most confidently wrong first.
    pub worst: Vec<Card>,
    /// A fixed sample (by a hash of the id, so reruns show the same movies).
    pub sample: Vec<Card>,
}

/// Picks `per_group` posters of each kind from `model`'s test predictions; `posters` is the
/// `download` output the poster paths are relative to.
pub fn build(
    model: &Evaluated,
    titles: &BTreeMap<i64, String>,
    posters: &Path,
    per_group: usize,
) -> Gallery {
    let test = &model.test;
    let genres = model.spec.genres.len();
    if genres == 0 || test.is_empty() || per_group == 0 {
        return Gallery::default();
    }
    let names = &model.spec.genres;
    let row = |r: usize| r * genres..(r + 1) * genres;
    let jaccard = |r: usize| {
        let (mut both, mut either) = (0, 0);
        for (t, p) in test.labels[row(r)].iter().zip(&model.predicted[row(r)]) {
            both += usize::from(*t == 1 && *p == 1);
            either += usize::from(*t == 1 || *p == 1);
        }
        if either == 0 {
            1.0
        } else {
            both as f64 / either as f64
        }
    };
    // Confidence in what was decided: the mean distance of the decided genres' probabilities
    // from the undecided side.
    let confidence = |r: usize| {
        let probs = &test.probs[row(r)];
        let predicted = &model.predicted[row(r)];
        probs
            .iter()
            .zip(predicted)
            .map(|(p, d)| if *d == 1 { *p } else { 1.0 - *p })
            .sum::<f32>()
            / genres as f32
    };
    let scored: Vec<(usize, f64, f32)> = (0..test.len())
        .map(|r| (r, jaccard(r), confidence(r)))
        .collect();
    let mut best = scored.clone();
    best.sort_by(|a, b| b.1.total_cmp(&a.1).then(b.2.total_cmp(&a.2)));
    let mut worst = scored.clone();
    worst.sort_by(|a, b| a.1.total_cmp(&b.1).then(b.2.total_cmp(&a.2)));
    let mut sample = scored;
    sample.sort_by_key(|(r, _, _)| (test.ids[*r] as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let card = |r: usize, jaccard: f64| {
        let mut top: Vec<(String, f32, bool, bool)> = (0..genres)
            .map(|g| {
                let i = r * genres + g;
                (
                    names[g].clone(),
                    test.probs[i],
                    model.predicted[i] == 1,
                    test.labels[i] == 1,
                )
            })
            .collect();
        top.sort_by(|a, b| b.1.total_cmp(&a.1));
        // Every predicted or true genre, and at least the three highest scores.
        let keep = top.iter().filter(|t| t.2 || t.3).count();
        let shown: Vec<_> = top
            .iter()
            .enumerate()
            .filter(|(i, t)| t.2 || t.3 || *i < 3)
            .map(|(_, t)| t.clone())
            .take(keep.max(3))
            .collect();
        Card {
            id: test.ids[r],
            title: titles.get(&test.ids[r]).cloned().unwrap_or_default(),
            thumbnail: test
                .posters
                .get(r)
                .and_then(|p| thumbnail(&posters.join(p))),
            truth: (0..genres)
                .filter(|&g| test.labels[r * genres + g] == 1)
                .map(|g| names[g].clone())
                .collect(),
            top: shown,
            jaccard,
        }
    };
    let take = |list: &[(usize, f64, f32)]| -> Vec<Card> {
        list.iter()
            .take(per_group)
            .map(|&(r, j, _)| card(r, j))
            .collect()
    };
    Gallery {
        best: take(&best),
        worst: take(&worst),
        sample: take(&sample),
    }
}

/// A small JPEG of the poster at `path` as a data URI, decoded with the pipeline's limits.
fn thumbnail(path: &Path) -> Option<String> {
    let bytes = std::fs::read(path).ok()?;
    let image = decode_rgb(&bytes).ok()?;
    let scale = f64::min(
        f64::from(THUMB.0) / f64::from(image.width()),
        f64::from(THUMB.1) / f64::from(image.height()),
    );
    let size = |side: u32| ((f64::from(side) * scale).round() as u32).max(1);
    let small = image::imageops::thumbnail(&image, size(image.width()), size(image.height()));
    let mut jpeg = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(Cursor::new(&mut jpeg), 78)
        .encode_image(&small)
        .ok()?;
    Some(format!(
        "data:image/jpeg;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(jpeg)
    ))
}

fn poster_card(card: &Card) -> Markup {
    html! {
        div.card {
            @match &card.thumbnail {
                Some(uri) => img src=(uri) alt=(format!("poster of {}", card.title));
                None => div.muted style="width:96px" { "no poster" },
            }
            div {
                div.title { (card.title) " " span.muted { "#" (card.id) } }
                div { span.muted { "true: " } @for g in &card.truth { span.tag { (g) } } @if card.truth.is_empty() { span.muted { "none" } } }
                div {
                    span.muted { "scores: " }
                    @for (g, p, predicted, truth) in &card.top {
                        @let class = match (predicted, truth) {
                            (true, true) => "tag hit",
                            (true, false) => "tag miss",
                            (false, true) => "tag missed",
                            (false, false) => "tag",
                        };
                        span class=(class) { (g) " " (format!("{p:.2}")) }
                    }
                }
                div.muted { "Jaccard " (format!("{:.2}", card.jaccard)) }
            }
        }
    }
}

/// The gallery's section of the report.
pub fn gallery_section(gallery: &Gallery) -> Markup {
    html! {
        section #gallery {
            h2 { "Test posters" }
            p.muted { "Green: predicted and true; red: predicted, not true; yellow: true, not predicted; grey: neither." }
            @for (title, cards) in [("Best hits", &gallery.best), ("Worst misses", &gallery.worst), ("A fixed random sample", &gallery.sample)] {
                h3 { (title) }
                div.cards { @for card in cards { (poster_card(card)) } }
            }
        }
    }
}
