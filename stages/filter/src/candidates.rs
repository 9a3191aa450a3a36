//! The movies `filter` considers: each with its download's outcome (read from `download`'s
//! `downloads.parquet`), whether its poster decodes, and the genre vocabulary they make.

use std::collections::BTreeMap;
use std::path::Path;

use pipeline_api::{ResultExt, StageError};
use serde::{Deserialize, Serialize};
use stage_shards::poster::decode_rgb;
use stage_shards::{i64_column, read_table, str_column};

/// One movie of `ingest`'s table, with what `download` made of its poster.
pub struct Candidate {
    pub id: i64,
    pub title: String,
    pub year: Option<i32>,
    /// `|`-joined.
    pub genres: String,
    /// The poster file in `download`'s output, when stored.
    pub file: Option<String>,
    /// Why there is none.
    pub download_error: Option<String>,
}

/// Every movie of `movies_dir`'s table with its download.
pub fn load(movies_dir: &Path, posters_dir: &Path) -> Result<Vec<Candidate>, StageError> {
    let movies_path = movies_dir.join("movies.parquet");
    let downloads_path = posters_dir.join("downloads.parquet");
    let movies = read_table(&movies_path)?;
    let downloads = read_table(&downloads_path)?;
    let mut fetched: BTreeMap<i64, (Option<String>, Option<String>)> = BTreeMap::new();
    for ((id, file), reason) in i64_column(&downloads, "imdbId", &downloads_path)?
        .iter()
        .zip(str_column(&downloads, "file", &downloads_path)?.iter())
        .zip(str_column(&downloads, "reason", &downloads_path)?.iter())
    {
        fetched.insert(
            id.unwrap_or_default(),
            (file.map(str::to_string), reason.map(str::to_string)),
        );
    }
    let years = movies
        .column("year")
        .and_then(|c| c.i32())
        .during(format!("column `year` of `{}`", movies_path.display()))?;
    let ids = i64_column(&movies, "imdbId", &movies_path)?;
    let titles = str_column(&movies, "title", &movies_path)?;
    let genres = str_column(&movies, "genres", &movies_path)?;
    let mut out = Vec::with_capacity(movies.height());
    for (((id, title), year), genres) in ids
        .iter()
        .zip(titles.iter())
        .zip(years.iter())
        .zip(genres.iter())
    {
        let id = id.unwrap_or_default();
        let (file, download_error) = match fetched.get(&id) {
            Some((Some(file), _)) => (Some(file.clone()), None),
            Some((None, reason)) => (
                None,
                Some(reason.clone().unwrap_or_else(|| "failed".into())),
            ),
            None => (None, Some("not downloaded".to_string())),
        };
        out.push(Candidate {
            id,
            title: title.unwrap_or_default().to_string(),
            year,
            genres: genres.unwrap_or_default().to_string(),
            file,
            download_error,
        });
    }
    Ok(out)
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
pub fn vocabulary(movies: &[Candidate], min_count: usize) -> Vocabulary {
    let mut all: BTreeMap<String, usize> = BTreeMap::new();
    for m in movies {
        for g in m.genres.split('|').filter(|g| !g.is_empty()) {
            *all.entry(g.to_string()).or_default() += 1;
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

    fn movie(genres: &str) -> Candidate {
        Candidate {
            id: 1,
            title: String::new(),
            year: Some(2001),
            genres: genres.into(),
            file: None,
            download_error: None,
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
