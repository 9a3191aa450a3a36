//! `filter`: keeps the movies a model can learn from and fixes the genre vocabulary.
//!
//! A movie is kept when its poster was downloaded and decodes, its year is at least `min_year`
//! (when set), and it has at least one genre of the vocabulary: the genres with at least
//! `min_genre_count` movies among the others kept. Every dropped movie is counted by reason.
//!
//! What lives where: this file runs the stage in named steps (cheap checks, decode checks, the
//! vocabulary, the table); `candidates` reads the movies with their downloads and makes the
//! vocabulary; `summary` counts and lists what was dropped; `params` holds the params.

mod candidates;
mod params;
mod summary;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

use pipeline_api::{
    Kind, KindInfo, ParamError, RunSummary, StageContext, StageError, check_range, item_key,
    write_json,
};
use rayon::prelude::*;
use stage_shards::movies::{KeptMovie, MOVIES_FILE, write_kept};

use candidates::{Candidate, vocabulary};
pub use candidates::{Vocabulary, check_decodes};
pub use params::FilterParams;
pub use summary::{DroppedMovie, EXAMPLES_PER_REASON, FilterSummary};

/// The filter stage kind.
pub struct Filter;

impl Kind for Filter {
    type Params = FilterParams;
    const INFO: KindInfo = KindInfo {
        inputs: &["movies", "posters"],
        input_kinds: &[("movies", &["ingest"]), ("posters", &["download"])],
        ..KindInfo::new(
            "filter",
            // 2: posters whose RGB image would exceed the decoder limit are refused by their declared
            // size (a grey 10,000 x 10,000 poster used to pass).
            // 3: `left-out.json`, the shape the report reads (no serde_json in the key either).
            // 4: the kept table is ingest's movies table (genres a list) with `poster_file`.
            4,
            "keep movies with a decodable poster, a recent year and a genre in the vocabulary",
            pipeline_api::locked_dependencies!(),
        )
    };
    fn check(p: &FilterParams) -> Result<(), ParamError> {
        if let Some(year) = p.min_year {
            check_range("min_year", year, 1800..=2200, "")?;
        }
        check_range(
            "min_genre_count",
            p.min_genre_count,
            0..=10_000_000,
            " movies",
        )
    }
    fn run(&self, ctx: &StageContext<'_>, params: FilterParams) -> Result<RunSummary, StageError> {
        let posters_dir = ctx.input("posters")?;
        let candidates = candidates::load(ctx.input("movies")?, posters_dir)?;
        let mut summary = FilterSummary {
            considered: candidates.len(),
            kept: 0,
            dropped: BTreeMap::new(),
            broken_posters: Vec::new(),
            dropped_movies: Vec::new(),
        };
        // Cheap checks first, so only posters that matter are decoded.
        let survivors = cheap_checks(candidates, &params, &mut summary);
        let checked = survivors.len();
        let (decodable, decoded) = decode_checks(ctx, survivors, posters_dir, &mut summary);
        let vocab = vocabulary(&decodable, params.min_genre_count);
        let kept = keep_in_vocabulary(decodable, &vocab, &mut summary);
        summary.kept = kept.len();
        write_kept(&ctx.out_dir.join(MOVIES_FILE), &kept)?;
        write_json(&ctx.out_dir.join("vocab.json"), &vocab)?;
        write_json(&ctx.out_dir.join("summary.json"), &summary)?;
        summary.left_out().save(ctx.out_dir)?;
        let dropped: Vec<String> = summary
            .dropped
            .iter()
            .map(|(reason, n)| format!("{n} {reason}"))
            .collect();
        Ok(RunSummary::new([
            format!(
                "{} of {} movies kept; vocabulary of {} genres",
                summary.kept,
                summary.considered,
                vocab.genres.len()
            ),
            format!(
                "dropped: {}",
                if dropped.is_empty() {
                    "none".into()
                } else {
                    dropped.join(", ")
                }
            ),
            format!(
                "decoded {decoded} posters, reused {} verdicts from earlier runs",
                checked - decoded
            ),
        ]))
    }
}

/// The movies with a downloaded poster and a recent enough year, each with its poster file; the
/// others are dropped.
fn cheap_checks(
    candidates: Vec<Candidate>,
    params: &FilterParams,
    summary: &mut FilterSummary,
) -> Vec<KeptMovie> {
    let mut survivors = Vec::new();
    for Candidate { movie, poster } in candidates {
        let too_old = params
            .min_year
            .filter(|&min| movie.year.is_none_or(|y| y < min));
        match (poster, too_old) {
            (Err(err), _) => {
                summary.drop_movie(movie.id, &movie.title, format!("no poster: {err}"));
            }
            (Ok(_), Some(min)) => {
                let reason = match movie.year {
                    None => "no year in title".to_string(),
                    Some(_) => format!("released before {min}"),
                };
                summary.drop_movie(movie.id, &movie.title, reason);
            }
            (Ok(poster_file), None) => survivors.push(KeptMovie { movie, poster_file }),
        }
    }
    survivors
}

/// The movies whose poster decodes, in parallel, and how many posters were decoded (the rest
/// reuse a verdict: posters are named by content hash, so a verdict per file holds forever).
fn decode_checks(
    ctx: &StageContext<'_>,
    survivors: Vec<KeptMovie>,
    posters_dir: &Path,
    summary: &mut FilterSummary,
) -> (Vec<KeptMovie>, usize) {
    ctx.progress.start("decode", survivors.len() as u64);
    let decode_count = AtomicUsize::new(0);
    let verdicts: Vec<Result<(), String>> = survivors
        .par_iter()
        .map(|kept| {
            let file = kept.poster_file.as_str();
            let key = item_key(&[b"filter-decodes-v1", file.as_bytes()]);
            let result = match ctx.items.get(&key) {
                Some(verdict) if verdict == b"ok" => Ok(()),
                Some(verdict) if verdict.starts_with(b"err:") => {
                    Err(String::from_utf8_lossy(&verdict[4..]).to_string())
                }
                _ => {
                    decode_count.fetch_add(1, Ordering::Relaxed);
                    let result = check_decodes(posters_dir, file);
                    let verdict = match &result {
                        Ok(()) => b"ok".to_vec(),
                        Err(e) => format!("err:{e}").into_bytes(),
                    };
                    let _ = ctx.items.put(&key, &verdict); // best effort
                    result
                }
            };
            ctx.progress.advance(1);
            result
        })
        .collect();
    let mut decodable = Vec::new();
    for (kept, verdict) in survivors.into_iter().zip(verdicts) {
        match verdict {
            Ok(()) => decodable.push(kept),
            Err(err) => summary.drop_movie(
                kept.movie.id,
                &kept.movie.title,
                format!("broken poster: {err}"),
            ),
        }
    }
    (decodable, decode_count.into_inner())
}

/// The movies with at least one genre of the vocabulary, each with those genres only; the
/// others are dropped.
fn keep_in_vocabulary(
    decodable: Vec<KeptMovie>,
    vocab: &Vocabulary,
    summary: &mut FilterSummary,
) -> Vec<KeptMovie> {
    let mut kept = Vec::new();
    for mut movie in decodable {
        movie.movie.genres.retain(|g| vocab.counts.contains_key(g));
        if movie.movie.genres.is_empty() {
            let reason = "no genre in vocabulary".to_string();
            summary.drop_movie(movie.movie.id, &movie.movie.title, reason);
        } else {
            kept.push(movie);
        }
    }
    kept
}
