//! The movies `filter` considers: each with its download's outcome (read from `download`'s
//! `downloads.parquet`), whether its poster decodes, and the genre vocabulary they make.

use std::collections::BTreeMap;
use std::path::Path;

use pipeline_api::StageError;
use serde::{Deserialize, Serialize};
use stage_shards::movies::{
    DOWNLOADS_FILE, DownloadOutcome, KeptMovie, MOVIES_FILE, Movie, read_downloads, read_movies,
};
use stage_shards::poster::decode_rgb;

/// One movie of `ingest`'s table, with what `download` made of its poster: the file in its
/// output, or why there is none.
pub struct Candidate {
    pub movie: Movie,
    pub poster: Result<String, String>,
}

/// Every movie of `movies_dir`'s table with its download.
pub fn load(movies_dir: &Path, posters_dir: &Path) -> Result<Vec<Candidate>, StageError> {
    let movies = read_movies(&movies_dir.join(MOVIES_FILE))?;
    let mut outcomes: BTreeMap<i64, DownloadOutcome> =
        read_downloads(&posters_dir.join(DOWNLOADS_FILE))?
            .into_iter()
            .map(|o| (o.id, o))
            .collect();
    Ok(movies
        .into_iter()
        .map(|movie| {
            let poster = match outcomes.remove(&movie.id) {
                Some(DownloadOutcome {
                    file: Some(file), ..
                }) => Ok(file),
                Some(DownloadOutcome { reason, .. }) => {
                    Err(reason.unwrap_or_else(|| "failed".into()))
                }
                None => Err("not downloaded".to_string()),
            };
            Candidate { movie, poster }
        })
        .collect())
}

/// Decodes the poster fully (a header alone says nothing about a truncated body).
pub fn check_decodes(posters_dir: &Path, file: &str) -> Result<(), String> {
    let bytes = std::fs::read(posters_dir.join(file)).map_err(|e| format!("unreadable: {e}"))?;
    decode_rgb(&bytes).map(|_| ())
}

/// The genre vocabulary (`vocab.json`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Vocabulary {
    /// Genres in label order: most frequent first, ties by name.
    pub genres: Vec<String>,
    /// Movies per genre among those kept.
    pub counts: BTreeMap<String, usize>,
    /// Genres left out (too rare) with their counts.
    pub excluded: BTreeMap<String, usize>,
}

/// The genres of `movies` with at least `min_count` movies, most frequent first.
pub fn vocabulary(movies: &[KeptMovie], min_count: usize) -> Vocabulary {
    let mut all: BTreeMap<String, usize> = BTreeMap::new();
    for m in movies {
        for g in &m.movie.genres {
            *all.entry(g.clone()).or_default() += 1;
        }
    }
    let (counts, excluded): (BTreeMap<_, _>, BTreeMap<_, _>) =
        all.into_iter().partition(|(_, n)| *n >= min_count.max(1));
    let mut genres: Vec<String> = counts.keys().cloned().collect();
    genres.sort_by(|a, b| counts[b].cmp(&counts[a]).then(a.cmp(b)));
    Vocabulary {
        genres,
        counts,
        excluded,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn movie(genres: &str) -> KeptMovie {
        KeptMovie {
            movie: Movie {
                id: 1,
                title: String::new(),
                year: Some(2001),
                score: None,
                genres: genres.split('|').map(str::to_string).collect(),
                poster: String::new(),
            },
            poster_file: String::new(),
        }
    }

    #[test]
    fn vocabulary_keeps_frequent_genres_most_frequent_first() {
        let movies = [
            movie("Drama|Comedy"),
            movie("Drama"),
            movie("Comedy|War"),
            movie("Drama"),
        ];
        let vocab = vocabulary(&movies, 2);
        assert_eq!(vocab.genres, ["Drama", "Comedy"]);
        assert_eq!(vocab.excluded["War"], 1);
    }

    #[test]
    fn truncated_images_do_not_decode() {
        let dir = tempfile::tempdir().unwrap();
        let mut png = Vec::new();
        image::RgbImage::from_pixel(8, 8, image::Rgb([1, 2, 3]))
            .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
            .unwrap();
        std::fs::write(dir.path().join("ok"), &png).unwrap();
        std::fs::write(dir.path().join("cut"), &png[..png.len() / 2]).unwrap();
        std::fs::write(dir.path().join("text"), b"<html>not an image</html>").unwrap();
        assert!(check_decodes(dir.path(), "ok").is_ok());
        assert!(check_decodes(dir.path(), "cut").is_err());
        assert!(check_decodes(dir.path(), "text").is_err());
    }
}
